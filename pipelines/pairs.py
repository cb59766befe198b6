"""Stage `pairs`: the protocol's splits, pairs and folds (facedata.protocol).

Reads the prepared indexes, CelebA's identity list (data.celeba.identity_list, as download@celeba
recorded it) and LFW's pairs.txt; writes data/pairs/celeba_train.csv, celeba_test.csv,
lfw_test.csv and summary.json.

    python -m pipelines.pairs
"""

from __future__ import annotations

import json
from pathlib import Path

from facedata import datasets, protocol
from facedata.prepared import read_index
from infra.atomic import write_json
from infra.records import TEST_PAIRS, TRAIN_PAIRS
from pipelines import stage
from pipelines.config import Params
from pipelines.layout import Layout, require


def run(params: Params, layout: Layout) -> dict:
    settings = params.pairs
    celeba_index = read_index(layout.prepared("celeba") / "index.parquet")
    celeba_source = json.loads(require(layout.source("celeba"), "download@celeba").read_text())
    listed = protocol.identity_list(params.data.celeba, datasets.read_identities(Path(celeba_source["identity_file"])),
                                    celeba_source.get("identity_list_file"))
    train, test, celeba_summary = protocol.celeba_pairs(celeba_index, listed, settings.celeba, settings.seed)
    if celeba_summary["scaled_split"]:
        print(
            f"celeba: the {celeba_summary['listed_identities_present']} listed identities of this copy leave the "
            f"protocol's training or test identities empty; split scaled to {celeba_summary['train_identities']} "
            f"train / {celeba_summary['test_identities']} test ({settings.celeba.train_identities} : "
            f"{settings.celeba.test_identities})"
        )
    source = json.loads(require(layout.source("lfw"), "download@lfw").read_text())
    lfw, lfw_summary = protocol.lfw_pairs(
        datasets.parse_pairs(Path(source["pairs_file"])),
        read_index(layout.prepared("lfw") / "index.parquet"),
        settings.lfw,
        settings.seed,
    )
    TRAIN_PAIRS.write(layout.train_pairs, train)
    TEST_PAIRS["celeba"].write(layout.test_pairs("celeba"), test)
    TEST_PAIRS["lfw"].write(layout.test_pairs("lfw"), lfw)
    summary = {"celeba": celeba_summary, "lfw": lfw_summary}
    write_json(layout.pairs / "summary.json", summary)
    print(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None, layout: Layout = Layout()) -> None:
    stage.main(run, "pairs", __doc__, argv=argv, layout=layout)


if __name__ == "__main__":
    main()
