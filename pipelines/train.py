"""Stage `train@<method>`: train one AnonyGAN variant on the CelebA training pairs.

Reads params `model`, `train` and `variants.<method>`, the training pairs (every batch keeps
their share of same-image pairs) and the prepared CelebA crops. Writes
models/<method>/checkpoint.pt, resumed when the stage is re-run after an interruption with the
same settings, and DVCLive logs in dvclive/<method>/.

    python -m pipelines.train anonygan-68
    dvc exp run -S train.epochs=1 -S model.base_channels=8 ...   # see TINY_OVERRIDES
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

from anonygan.data import PairData
from anonygan.model import ModelConfig
from anonygan.training import LossWeights, NonFiniteLossError, TrainConfig, Trainer
from pipelines.params import ParamsError, run_stage, section

PAIRS = Path("data/pairs/celeba_train.csv")
PREPARED = Path("data/prepared/celeba")
MODELS = Path("models")
DVCLIVE = Path("dvclive")
VARIANT_KEYS = ("landmarks", "landmark_attention", "context_matching")

#: The tiny configuration of the tests, the benchmark and CI: `dvc exp run -S key=value` for each.
#: Paper-scale values stay in params.yaml; nothing else changes.
TINY_OVERRIDES: dict[str, Any] = {
    "model.base_channels": 8,
    "model.graph_blocks": 2,
    "model.discriminator_channels": 8,
    "train.epochs": 1,
    "train.samples_per_epoch": 4,
    "train.batch_size": 4,
    "train.workers": 0,
}


def overridden(params: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of params with dotted keys set, as `dvc exp run -S key=value` does."""
    params = copy.deepcopy(params)
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        section(params, ".".join(parents))[leaf] = value
    return params


def configs(params: dict[str, Any], method: str) -> tuple[ModelConfig, TrainConfig]:
    """ModelConfig and TrainConfig of `method` (a key of params `variants`)."""
    variants = section(params, "variants")
    if method not in variants:
        raise ParamsError(f"unknown method {method!r}: params.yaml variants has {', '.join(variants)}")
    variant = section(params, f"variants.{method}")
    if set(variant) != set(VARIANT_KEYS):
        raise ParamsError(f"variants.{method} must set exactly {', '.join(VARIANT_KEYS)}; got {sorted(variant)}")
    model, train = dict(section(params, "model")), dict(section(params, "train"))
    try:
        weights = LossWeights(**section(params, "train.weights"))
        train.update(weights=weights, betas=tuple(train.get("betas", ())),
                     context_matching=variant["context_matching"])
        return (ModelConfig(**model, landmarks=variant["landmarks"],
                            landmark_attention=variant["landmark_attention"]),
                TrainConfig(**train))
    except TypeError as error:  # an unknown or missing key
        raise ParamsError(f"model/train params: {error}") from None
    except ValueError as error:
        raise ParamsError(str(error)) from None


def run(method: str, params: dict[str, Any], pairs: Path = PAIRS, prepared: Path = PREPARED,
        models: Path = MODELS, dvclive: Path | None = DVCLIVE) -> Path:
    """Train (or resume) `method`; returns the checkpoint path."""
    model_config, train_config = configs(params, method)
    data = PairData.from_files(pairs, prepared)
    checkpoint = models / method / "checkpoint.pt"
    trainer = Trainer(model_config, train_config, data, checkpoint,
                      live_dir=dvclive / method if dvclive is not None else None)
    trainer.fit()
    return checkpoint


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("method", help="a key of params.yaml `variants`, e.g. anonygan-68")
    args = parser.parse_args(argv)
    run_stage(f"train@{args.method}", run, args.method,
              errors=(ParamsError, FileNotFoundError, NonFiniteLossError))


if __name__ == "__main__":
    main()
