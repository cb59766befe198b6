"""Stage `prepare@<dataset>`: landmarks, canonical crop and face mask for every photo of the protocol.

CelebA: every image of the identities in the protocol's identity list (data.celeba.identity_list).
LFW: every image that pairs.txt names.

Writes data/prepared/<dataset>/ (see facedata.prepared for the layout) and a summary.json
with the count of each status. The work is journalled as it finishes and every reused row is
checked against the photo, settings and files that made it (facedata.prepare_engine): a re-run,
also after an interruption, processes only new, changed or unfinished photos.

    python -m pipelines.prepare celeba|lfw
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from facedata import datasets, protocol
from facedata.prepare_engine import prepare_photos
from pipelines import stage
from pipelines.config import Params
from pipelines.layout import Layout, require


def protocol_images(dataset: str, source: dict, params: Params) -> dict[str, str]:
    """{key: identity} for every photo the protocol uses."""
    if dataset == "celeba":
        identities = datasets.read_identities(Path(source["identity_file"]))
        listed = set(protocol.identity_list(params.data.celeba, identities, source.get("identity_list_file")))
        return {key: identity for key, identity in identities.items() if identity in listed}
    pairs = datasets.parse_pairs(Path(source["pairs_file"]))
    keys = {key for pair in pairs for key in (pair.first, pair.second)}
    return {key: datasets.lfw_identity(key) for key in keys}


def run(params: Params, layout: Layout, dataset: str) -> dict:
    source = json.loads(require(layout.source(dataset), f"download@{dataset}").read_text())
    workers = params.prepare.workers or os.cpu_count() or 1
    return prepare_photos(params.prepare, Path(source["images_dir"]), layout.prepared(dataset),
                          protocol_images(dataset, source, params), dataset, workers)


def main(argv: list[str] | None = None, layout: Layout = Layout()) -> dict:
    return stage.main(run, "prepare", __doc__, item="dataset", choices=datasets.DATASETS, argv=argv, layout=layout,
               lock_folder=lambda layout, dataset: layout.prepared(dataset))


if __name__ == "__main__":
    main()
