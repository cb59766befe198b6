"""Stage `train@<variant>`: train one AnonyGAN variant on the CelebA training pairs.

Reads params `model`, `train` and `variants.<variant>` (which overrides some of their settings),
the training pairs (every batch keeps their share of same-image pairs) and the prepared CelebA
crops. Writes models/<variant>/checkpoint.pt, resumed when the stage is re-run after an
interruption with the same settings, and DVCLive logs in dvclive/<variant>/.

dvc.yaml launches it with torchrun, one process per GPU (`train.processes`); each process takes
its share of every optimiser step's micro-batches:

    torchrun --standalone --nproc_per_node 2 -m pipelines.train anonygan-68
    python -m pipelines.train anonygan-68          # the same as --nproc_per_node 1
"""

from __future__ import annotations

from pathlib import Path

import runtime
from anonygan.data import PairData
from anonygan.training import Trainer
from infra.errors import ParamsError
from pipelines import stage
from pipelines.config import Params
from pipelines.layout import Layout, require


def run(params: Params, layout: Layout, variant: str) -> Path:
    """Train (or resume) `variant`; returns the checkpoint path."""
    model_config, train_config = params.variant(variant)
    launched = runtime.launched_processes()
    if launched != train_config.processes:
        raise ParamsError(f"train.processes is {train_config.processes} for {variant} but {launched} process(es) "
                          f"were launched: run `torchrun --standalone --nproc_per_node {train_config.processes} "
                          f"-m pipelines.train {variant}` (dvc repro does, with train.processes)")
    data = PairData.from_files(require(layout.train_pairs, "pairs"), layout.prepared("celeba"))
    checkpoint = layout.checkpoint(variant)
    with runtime.process_group() as device:
        Trainer(model_config, train_config, data, checkpoint, live_dir=layout.live(variant), device=device).fit()
    return checkpoint


def main(argv: list[str] | None = None, layout: Layout = Layout()) -> None:
    stage.main(run, "train", __doc__, item="variant", argv=argv, layout=layout)


if __name__ == "__main__":
    main()
