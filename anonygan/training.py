"""Hybrid adversarial training of AnonyGAN: one step = G, then D_app, then D_lm (the authors' order).

Resumable (`facedata.runtime.EpochTrainer`): a checkpoint holds the networks, optimisers,
schedulers, the global RNG state and the number of finished epochs; batches depend only on
(seed, epoch), so an interrupted run resumed from its last checkpoint continues exactly as an
uninterrupted one (on CPU).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm import tqdm

from anonygan import losses
from anonygan.data import NetworkInputs, PairData, hybrid_batches, to_uint8
from anonygan.model import CHECKPOINT_FORMAT, CHECKPOINT_KIND, ModelConfig, build
from facedata import runtime
from facedata.config import FieldError, above, at_least

LOSS_NAMES = ("g_adversarial", "g_pose", "g_wfm", "g_reconstruction", "g_total", "d_app", "d_lm")
NETWORKS = ("generator", "d_app", "d_lm")


@dataclass(frozen=True)
class LossWeights:
    """Authors' final runs: l_gan 1, l_pose 1, l_wfm 1, l_rec 10."""

    adversarial: Annotated[float, at_least(0)] = 1.0
    pose: Annotated[float, at_least(0)] = 1.0
    wfm: Annotated[float, at_least(0)] = 1.0
    reconstruction: Annotated[float, at_least(0)] = 10.0


@dataclass(frozen=True)
class TrainConfig:
    seed: Annotated[int, at_least(0)] = 0
    epochs: Annotated[int, at_least(1)] = 700
    samples_per_epoch: Annotated[int, at_least(1)] = 4096  # the authors' epoch: 4,096 random pairs
    batch_size: Annotated[int, at_least(1)] = 32
    lr_generator: Annotated[float, above(0)] = 2e-4
    lr_discriminator: Annotated[float, above(0)] = 2e-6
    betas: tuple[Annotated[float, at_least(0)], Annotated[float, at_least(0)]] = (0.5, 0.999)
    lr_decay_start_epoch: Annotated[int, at_least(0)] = 500  # constant until here, then linear to 0 at the end
    context_matching: bool = True  # the wFM term
    wfm_samples: Literal["different", "all"] = "different"  # different (paper, SPEC) | all (authors' code)
    reconstruction_region: Literal["image", "face"] = "image"  # image (paper; authors' code in effect) | face
    weights: LossWeights = field(default_factory=LossWeights)
    checkpoint_every: Annotated[int, at_least(1)] = 5  # epochs
    sample_every: Annotated[int, at_least(1)] = 10  # epochs; a sample grid of fixed pairs
    workers: Annotated[int, at_least(0)] = 2  # data loader processes
    precision: Literal["bf16", "fp32"] = "bf16"  # bf16 autocast on CUDA only | fp32; CPU always runs fp32

    def __post_init__(self):
        if self.samples_per_epoch < self.batch_size:
            raise FieldError("samples_per_epoch", f"({self.samples_per_epoch}) must be at least batch_size "
                                                  f"({self.batch_size})")
        if any(beta >= 1 for beta in self.betas):
            raise FieldError("betas", f"must both be below 1; got {list(self.betas)}")

    @property
    def steps_per_epoch(self) -> int:
        return self.samples_per_epoch // self.batch_size

    def lr_factor(self, epoch: int) -> float:
        """1 before lr_decay_start_epoch, then linear so the rate would reach 0 after the last epoch."""
        decay_epochs = self.epochs - self.lr_decay_start_epoch
        if decay_epochs <= 0:
            return 1.0
        return 1.0 - max(0, epoch + 1 - self.lr_decay_start_epoch) / (decay_epochs + 1)


class Trainer(runtime.EpochTrainer):
    """Builds G, D_app, D_lm and their optimisers for one variant and trains them on `data`.

    `data` is needed by `fit` only; `step` takes batches from anywhere.
    """

    kind, format_version = CHECKPOINT_KIND, CHECKPOINT_FORMAT
    #: Settings that do not change what is computed: a checkpoint written under other values resumes.
    resume_ignores = {"train_config": {"workers", "checkpoint_every", "sample_every"}}

    def __init__(self, model_config: ModelConfig, config: TrainConfig, data: PairData | None,
                 checkpoint: Path, live_dir: Path | None = None, device: torch.device | None = None):
        self.model_config, self.config, self.data = model_config, config, data
        self.checkpoint, self.live_dir = Path(checkpoint), live_dir
        self.device = device or runtime.default_device()
        self.memory_format = runtime.memory_format(self.device)
        self.autocast = runtime.autocast(self.device, config.precision)

        torch.manual_seed(config.seed)
        networks = build(model_config)
        self.generator, self.d_app, self.d_lm = (
            net.to(self.device, memory_format=self.memory_format) for net in networks)
        lr = {"generator": config.lr_generator, "d_app": config.lr_discriminator,
              "d_lm": config.lr_discriminator}
        self.optimizers = {name: torch.optim.Adam(getattr(self, name).parameters(), lr=lr[name],
                                                  betas=config.betas)
                           for name in NETWORKS}
        self.schedulers = {name: torch.optim.lr_scheduler.LambdaLR(optimizer, config.lr_factor)
                           for name, optimizer in self.optimizers.items()}
        self.epoch = 0
        self._samples: dict[str, Tensor] | None = None

    epochs = property(lambda self: self.config.epochs)
    checkpoint_every = property(lambda self: self.config.checkpoint_every)
    sample_every = property(lambda self: self.config.sample_every)
    steps_per_epoch = property(lambda self: self.config.steps_per_epoch)

    def settings(self) -> dict[str, dict[str, Any]]:
        return {"model_config": asdict(self.model_config), "train_config": asdict(self.config)}

    def modules(self) -> dict[str, Any]:
        return {**{name: getattr(self, name) for name in NETWORKS},
                **{f"optimizer_{name}": optimizer for name, optimizer in self.optimizers.items()},
                **{f"scheduler_{name}": scheduler for name, scheduler in self.schedulers.items()}}

    # -- one step -----------------------------------------------------------------------------

    def inputs(self, batch: dict[str, Tensor]) -> NetworkInputs:
        return NetworkInputs.build(batch, self.model_config.landmark_indices, self.device,
                                   self.memory_format)

    def step(self, x: NetworkInputs) -> dict[str, Tensor]:
        """One update of G, then D_app, then D_lm (the authors' order); returns the detached losses."""
        with self.autocast:
            generated = self.generator(x.condition, x.context, x.condition_maps, x.source_maps)
            terms = self.generator_losses(x, generated)
            g_total = sum(getattr(self.config.weights, name) * value for name, value in terms.items())
        runtime.update(self.optimizers["generator"], g_total)
        result = {f"g_{name}": value for name, value in terms.items()} | {"g_total": g_total}

        fake = generated.detach()
        for name, condition in (("d_app", x.condition), ("d_lm", x.source_maps)):
            discriminator = getattr(self, name)
            with self.autocast:
                loss = losses.discriminator(discriminator(x.source, condition)[-1],
                                            discriminator(fake, condition)[-1])
            runtime.update(self.optimizers[name], loss)
            result[name] = loss
        return {name: result[name].detach().float() for name in LOSS_NAMES}

    def generator_losses(self, x: NetworkInputs, generated: Tensor) -> dict[str, Tensor]:
        """The generator's terms (eqs. 2-4 and L1), each on the samples it applies to; keys match LossWeights."""
        cfg, zero = self.config, torch.zeros((), device=self.device)
        fake_features = self.d_app(generated, x.condition)
        terms = {
            "adversarial": losses.adversarial(fake_features[-1], real=True),
            "pose": losses.adversarial(self.d_lm(generated, x.source_maps)[-1], real=True),
            "wfm": zero,
            "reconstruction": zero,
        }
        matched = ~x.same_image if cfg.wfm_samples == "different" else torch.ones_like(x.same_image)
        if cfg.context_matching and matched.any():
            with torch.no_grad():
                real_features = self.d_app(x.source, x.condition)
            terms["wfm"] = losses.weak_feature_matching([f[matched] for f in fake_features[:-1]],
                                                        [f[matched] for f in real_features[:-1]])
        same = x.same_image
        if same.any():
            terms["reconstruction"] = losses.reconstruction(generated[same], x.source[same], x.mask[same],
                                                            cfg.reconstruction_region)
        return terms

    # -- epochs -------------------------------------------------------------------------------

    def loader(self, epoch: int) -> DataLoader:
        cfg = self.config
        batches = hybrid_batches(self.data.same_image, cfg.batch_size, cfg.steps_per_epoch, cfg.seed, epoch)
        return DataLoader(self.data, batch_sampler=batches, num_workers=cfg.workers,
                          pin_memory=self.device.type == "cuda")

    def train_epoch(self, progress: tqdm) -> dict[str, float]:
        """One epoch of steps; returns the mean of each loss and the generator's learning rate."""
        for net in (self.generator, self.d_app, self.d_lm):
            net.train()
        totals = dict.fromkeys(LOSS_NAMES, 0.0)
        for index, batch in enumerate(self.loader(self.epoch)):
            step_losses = self.step(self.inputs(batch))
            values = dict(zip(LOSS_NAMES, torch.stack(list(step_losses.values())).tolist(), strict=True))
            self.check_finite(values, index + 1)  # one device sync per step
            for name, value in values.items():
                totals[name] += value
            progress.update()
            progress.set_postfix({name: f"{values[name]:.3f}" for name in ("g_total", "d_app", "d_lm")},
                                 refresh=False)
        means = {name: total / self.config.steps_per_epoch for name, total in totals.items()}
        return means | {"lr_generator": self.optimizers["generator"].param_groups[0]["lr"]}

    def end_epoch(self) -> None:
        for scheduler in self.schedulers.values():
            scheduler.step()

    # -- samples ------------------------------------------------------------------------------

    def sample_batch(self, count: int = 8) -> dict[str, Tensor]:
        """Fixed pairs for the sample grids: different-image pairs first, the anonymisation case."""
        order = np.argsort(self.data.same_image, kind="stable")[:count]
        items = [self.data[int(index)] for index in order]
        return {key: torch.stack([item[key] for item in items]) for key in items[0]}

    @torch.no_grad()
    def sample_grid(self) -> Image.Image:
        """Rows: condition, source context, output (eval mode), source."""
        if self._samples is None:
            self._samples = self.sample_batch()
        self.generator.eval()
        x = self.inputs(self._samples)
        with self.autocast:
            generated = self.generator(x.condition, x.context, x.condition_maps, x.source_maps)
        self.generator.train()
        rows = [np.concatenate(list(to_uint8(images)), axis=1)
                for images in (x.condition, x.context, generated, x.source)]
        return Image.fromarray(np.concatenate(rows, axis=0))
