"""Stage `train-ciagan`: train the CIAGAN baseline on the CelebA training identities.

Identities: those of data/pairs/celeba_train.csv, in its (protocol) order; images: every
prepared photo of them (CIAGAN trains on whole identity folders, not on AnonyGAN's pairs).
Writes models/ciagan/checkpoint.pt (resumed after an interruption with the same settings) and
DVCLive logs to dvclive/ciagan/.

    python -m pipelines.train_ciagan
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from baselines.ciagan.training import CiaganTrainer, FaceSet, training_faces
from facedata.prepared import PreparedDataset
from infra.records import TRAIN_PAIRS
from pipelines import stage
from pipelines.config import Params
from pipelines.layout import Layout, require

METHOD = "ciagan"


def run(params: Params, layout: Layout) -> Path:
    """Train (or resume) CIAGAN; returns the checkpoint path."""
    pairs = TRAIN_PAIRS.read(require(layout.train_pairs, "pairs"))
    prepared = layout.prepared("celeba")
    identities, keys, labels = training_faces(pairs, PreparedDataset(prepared))
    config = dataclasses.replace(params.ciagan.model, identities=len(identities))
    trainer = CiaganTrainer(config, params.ciagan.train, FaceSet(prepared, keys, labels), layout.checkpoint(METHOD),
                            layout.live(METHOD), identities=identities)
    print(f"ciagan: {len(identities)} identities, {len(keys)} photos, {trainer.steps_per_epoch} iterations per "
          f"epoch on {trainer.device}")
    trainer.fit()
    return layout.checkpoint(METHOD)


def main(argv: list[str] | None = None, layout: Layout = Layout()) -> None:
    stage.main(run, "train-ciagan", __doc__, argv=argv, layout=layout)


if __name__ == "__main__":
    main()
