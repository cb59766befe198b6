"""Stage `train@ciagan`: train the CIAGAN baseline on the CelebA training identities.

Identities: those of data/pairs/celeba_train.csv, in its (protocol) order; images: every
prepared photo of them (CIAGAN trains on whole identity folders, not on AnonyGAN's pairs).
Writes models/ciagan/checkpoint.pt and DVCLive logs to dvclive/ciagan/.

    python -m pipelines.train_ciagan ciagan
"""

from __future__ import annotations

import argparse
import time
from dataclasses import fields
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import torch
from PIL import Image

from baselines.ciagan import CiaganConfig, CiaganTrainer, TrainingConfig
from baselines.ciagan.anonymiser import render_planes
from baselines.ciagan.training import FaceSet, PairBatches
from baselines.interface import identity_order
from facedata.atomic import atomic_path
from facedata.prepared import PreparedDataset
from pipelines.params import ParamsError, integer, load, section

METHOD = "ciagan"
PAIRS = Path("data/pairs/celeba_train.csv")
PREPARED = Path("data/prepared/celeba")
MODELS = Path("models")
DVCLIVE = Path("dvclive")


def configs_from_params(params: dict, identities: int) -> tuple[CiaganConfig, TrainingConfig]:
    """Architecture and training settings from params.yaml's `ciagan` section (flat keys)."""
    settings = dict(section(params, METHOD))
    defaults = {f.name: f.default for config in (CiaganConfig, TrainingConfig) for f in fields(config)}
    del defaults["identities"]  # counted from the data
    unknown = sorted(set(settings) - set(defaults))
    if unknown:
        raise ParamsError(f"ciagan: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(defaults))}")
    for name, value in settings.items():
        default = defaults[name]
        if isinstance(default, int) and not isinstance(default, bool):
            integer(value, f"ciagan.{name}", 0)
        elif isinstance(value, list):
            settings[name] = tuple(value)
        elif isinstance(default, float) and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ParamsError(f"ciagan.{name} must be a number; got {value!r}")
    architecture = {f.name for f in fields(CiaganConfig)}
    try:
        config = CiaganConfig(identities=identities, **{k: v for k, v in settings.items() if k in architecture})
        training = TrainingConfig(**{k: v for k, v in settings.items() if k not in architecture})
    except (TypeError, ValueError) as error:
        raise ParamsError(f"ciagan: {error}") from None
    return config, training


def training_faces(pairs: pd.DataFrame, prepared: PreparedDataset) -> tuple[list[str], list[str], list[int]]:
    """(identities in protocol order, keys of their prepared photos, identity index per key)."""
    identities = identity_order(pairs)
    position = {identity: index for index, identity in enumerate(identities)}
    ok = prepared.ok
    ok = ok[ok["identity"].astype(str).isin(position)].sort_index()
    missing = sorted(set(identities) - set(ok["identity"].astype(str)))
    if missing:
        raise ValueError(f"training identities without prepared photos in {prepared.root}: {', '.join(missing[:5])}")
    return list(identities), list(ok["key"]), [position[str(identity)] for identity in ok["identity"]]


class Log(Protocol):
    def losses(self, iteration: int, losses: dict[str, float]) -> None: ...
    def samples(self, name: str, grid: Image.Image) -> None: ...


def sample_grid(trainer: CiaganTrainer, planes: torch.Tensor, labels: torch.Tensor) -> Image.Image:
    """Sources (top) and their anonymisation as the next training identity (bottom), as at test time."""
    targets = ((labels + 1) % trainer.config.identities).numpy()
    trainer.generator.eval()  # spectral norm: no power iteration on sample batches
    try:
        outputs = render_planes(trainer.generator, planes.to(trainer.device), targets, trainer.training.frame_scale)
    finally:
        trainer.generator.train()
    sources = planes[:, :3].permute(0, 2, 3, 1).numpy()
    return Image.fromarray(np.concatenate([np.concatenate(list(row), axis=1) for row in (sources, outputs)]))


def train(params: dict, pairs_file: Path, prepared_root: Path, checkpoint: Path, log: Log | None = None) -> dict:
    """Train from scratch and write `checkpoint`; returns the last logged losses."""
    pairs = pd.read_csv(pairs_file, dtype={"source_identity": str, "condition_identity": str})
    identities, keys, labels = training_faces(pairs, PreparedDataset(prepared_root))
    config, training = configs_from_params(params, len(identities))
    trainer = CiaganTrainer(config, training)
    faces = FaceSet(prepared_root, keys, labels)
    loader = torch.utils.data.DataLoader(
        faces, batch_sampler=PairBatches(labels, training.batch_size, training.seed),
        num_workers=training.workers, pin_memory=trainer.device.type == "cuda",
        persistent_workers=training.workers > 0)
    batches = iter(loader)
    # One photo of each of the first eight identities, fixed for every sample image.
    shown = [labels.index(label) for label in sorted(set(labels))[:8]]
    sample_planes, sample_labels = (torch.stack(items) for items in zip(*(faces[i] for i in shown), strict=True))
    total = training.iterations(len(keys))
    per_epoch = total // training.epochs
    print(f"ciagan: {len(identities)} identities, {len(keys)} photos, {total} iterations on {trainer.device}")
    losses: dict[str, float] = {}
    started = time.perf_counter()
    for iteration in range(1, total + 1):
        losses = trainer.iteration(batches)
        if iteration % training.log_every == 0 or iteration == total:
            losses["seconds_per_iteration"] = (time.perf_counter() - started) / iteration
            print(f"ciagan {iteration}/{total} " + " ".join(f"{k}={v:.4f}" for k, v in losses.items()))
            if log is not None:
                log.losses(iteration, losses)
        epoch, end_of_epoch = divmod(iteration, per_epoch)
        if log is not None and end_of_epoch == 0 and (epoch % training.sample_every == 0 or iteration == total):
            log.samples(f"epoch-{epoch:04d}.png", sample_grid(trainer, sample_planes, sample_labels))
    with atomic_path(checkpoint) as tmp:
        torch.save(trainer.checkpoint(identities, total), tmp)
    return losses


class LiveLog:
    """Losses and sample images to DVCLive (dvclive/ciagan/), step = iteration."""

    def __init__(self, live):
        self.live = live

    def losses(self, iteration: int, losses: dict[str, float]) -> None:
        self.live.step = iteration
        for name, value in losses.items():
            self.live.log_metric(f"train/{name}", value)

    def samples(self, name: str, grid: Image.Image) -> None:
        self.live.log_image(f"samples/{name}", grid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("method", choices=[METHOD])
    args = parser.parse_args()
    from dvclive import Live

    with Live(str(DVCLIVE / args.method), save_dvc_exp=False, dvcyaml=None) as live:
        train(load(), PAIRS, PREPARED, MODELS / args.method / "checkpoint.pt", LiveLog(live))


if __name__ == "__main__":
    main()
