"""Hybrid adversarial training of AnonyGAN: one step = G, then D_app, then D_lm (the authors' order).

Resumable: a checkpoint holds the networks, optimisers, schedulers, the global RNG state and
the number of finished epochs; batches depend only on (seed, epoch), so an interrupted run
resumed from its last checkpoint continues exactly as an uninterrupted one (on CPU).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm import tqdm

from anonygan import losses
from anonygan.data import NetworkInputs, PairData, hybrid_batches, to_uint8
from anonygan.model import ModelConfig, build
from facedata.atomic import atomic_path

CHECKPOINT_FORMAT = 1
LOSS_NAMES = ("g_adversarial", "g_pose", "g_wfm", "g_reconstruction", "g_total", "d_app", "d_lm")
WFM_SAMPLES = ("different", "all")
#: Settings that do not change what is computed: a checkpoint written under other values resumes.
RESUME_IGNORES = {"model_config": {"test_output"},
                  "train_config": {"workers", "checkpoint_every", "sample_every"}}


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; the last checkpoint on disk is still the last good state."""


@dataclass(frozen=True)
class LossWeights:
    """Authors' final runs: l_gan 1, l_pose 1, l_wfm 1, l_rec 10."""

    adversarial: float = 1.0
    pose: float = 1.0
    wfm: float = 1.0
    reconstruction: float = 10.0


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    epochs: int = 700
    samples_per_epoch: int = 4096  # the authors' epoch: 4,096 random pairs
    batch_size: int = 32
    lr_generator: float = 2e-4
    lr_discriminator: float = 2e-6
    betas: tuple[float, float] = (0.5, 0.999)
    lr_decay_start_epoch: int = 500  # constant until here, then linear to 0 at the end
    context_matching: bool = True  # the wFM term
    wfm_samples: str = "different"  # different (paper, SPEC) | all (authors' code)
    reconstruction_region: str = "image"  # image (paper; authors' code in effect) | face
    weights: LossWeights = field(default_factory=LossWeights)
    checkpoint_every: int = 5  # epochs
    sample_every: int = 10  # epochs; a sample grid of fixed pairs
    workers: int = 2  # data loader processes
    precision: str = "bf16"  # bf16 | fp32, autocast on CUDA only; CPU always runs fp32

    def __post_init__(self):
        positive = ("epochs", "samples_per_epoch", "batch_size", "checkpoint_every", "sample_every")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"train.{name} must be a positive integer; got {value!r}")
        if self.samples_per_epoch < self.batch_size:
            raise ValueError(f"train.samples_per_epoch ({self.samples_per_epoch}) must be at least "
                             f"train.batch_size ({self.batch_size})")
        choices = {"wfm_samples": WFM_SAMPLES, "reconstruction_region": losses.RECONSTRUCTION_REGIONS,
                   "precision": ("bf16", "fp32")}
        for name, options in choices.items():
            if getattr(self, name) not in options:
                raise ValueError(f"train.{name} must be one of {', '.join(options)}; "
                                 f"got {getattr(self, name)!r}")
        if self.workers < 0:
            raise ValueError(f"train.workers must be >= 0; got {self.workers!r}")

    @property
    def steps_per_epoch(self) -> int:
        return self.samples_per_epoch // self.batch_size

    def lr_factor(self, epoch: int) -> float:
        """1 before lr_decay_start_epoch, then linear so the rate would reach 0 after the last epoch."""
        decay_epochs = self.epochs - self.lr_decay_start_epoch
        if decay_epochs <= 0:
            return 1.0
        return 1.0 - max(0, epoch + 1 - self.lr_decay_start_epoch) / (decay_epochs + 1)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class Trainer:
    """Builds G, D_app, D_lm and their optimisers for one variant and trains them on `data`.

    `data` is needed by `fit` only; `step` takes batches from anywhere.
    """

    def __init__(self, model_config: ModelConfig, config: TrainConfig, data: PairData | None,
                 checkpoint: Path, live_dir: Path | None = None, device: torch.device | None = None):
        self.model_config, self.config, self.data = model_config, config, data
        self.checkpoint, self.live_dir = Path(checkpoint), live_dir
        self.device = device or default_device()
        cuda = self.device.type == "cuda"
        self.memory_format = torch.channels_last if cuda else torch.contiguous_format
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16,
                                       enabled=cuda and config.precision == "bf16")

        torch.manual_seed(config.seed)
        networks = build(model_config)
        self.generator, self.d_app, self.d_lm = (
            net.to(self.device, memory_format=self.memory_format) for net in networks)
        lr = {"generator": config.lr_generator, "d_app": config.lr_discriminator,
              "d_lm": config.lr_discriminator}
        self.optimizers = {name: torch.optim.Adam(getattr(self, name).parameters(), lr=lr[name],
                                                  betas=config.betas)
                           for name in lr}
        self.schedulers = {name: torch.optim.lr_scheduler.LambdaLR(optimizer, config.lr_factor)
                           for name, optimizer in self.optimizers.items()}
        self.epoch = 0  # finished epochs

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
        self._update("generator", g_total)
        result = {f"g_{name}": value for name, value in terms.items()} | {"g_total": g_total}

        fake = generated.detach()
        for name, condition in (("d_app", x.condition), ("d_lm", x.source_maps)):
            discriminator = getattr(self, name)
            with self.autocast:
                loss = losses.discriminator(discriminator(x.source, condition)[-1],
                                            discriminator(fake, condition)[-1])
            self._update(name, loss)
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

    def _update(self, name: str, loss: Tensor) -> None:
        optimizer = self.optimizers[name]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    # -- epochs -------------------------------------------------------------------------------

    def loader(self, epoch: int) -> DataLoader:
        cfg = self.config
        batches = hybrid_batches(self.data.same_image, cfg.batch_size, cfg.steps_per_epoch, cfg.seed, epoch)
        return DataLoader(self.data, batch_sampler=batches, num_workers=cfg.workers,
                          pin_memory=self.device.type == "cuda")

    def fit(self) -> None:
        """Train to config.epochs, resuming from the checkpoint when it belongs to this configuration."""
        resumed = self.resume()
        live = self._live(resumed)
        cfg = self.config
        progress = tqdm(total=cfg.epochs * cfg.steps_per_epoch, initial=self.epoch * cfg.steps_per_epoch,
                        unit="step", desc=f"train {self.checkpoint.parent.name}", dynamic_ncols=True)
        samples = self.sample_batch() if live is not None else None
        try:
            while self.epoch < cfg.epochs:
                means = self.train_epoch(progress)
                self.epoch += 1
                for scheduler in self.schedulers.values():
                    scheduler.step()
                if live is not None:
                    self._log(live, means, samples)
                if self.epoch % cfg.checkpoint_every == 0 or self.epoch == cfg.epochs:
                    self.save()
        finally:
            progress.close()
            if live is not None:
                live.end()

    def train_epoch(self, progress: tqdm) -> dict[str, float]:
        """One epoch of steps; returns the mean of each loss. Raises on a non-finite loss."""
        for net in (self.generator, self.d_app, self.d_lm):
            net.train()
        totals = dict.fromkeys(LOSS_NAMES, 0.0)
        for index, batch in enumerate(self.loader(self.epoch)):
            step_losses = self.step(self.inputs(batch))
            values = dict(zip(LOSS_NAMES, torch.stack(list(step_losses.values())).tolist(), strict=True))
            for name, value in values.items():  # read in one device sync per step
                if not math.isfinite(value):
                    raise NonFiniteLossError(
                        f"{name} = {value} at epoch {self.epoch + 1}, step {index + 1}: training stopped; "
                        f"{self.checkpoint} still holds the last good state (lower the learning rates "
                        f"or try train.precision=fp32)")
                totals[name] += value
            progress.update()
            progress.set_postfix({name: f"{values[name]:.3f}" for name in ("g_total", "d_app", "d_lm")},
                                 refresh=False)
        return {name: total / self.config.steps_per_epoch for name, total in totals.items()}

    # -- checkpoints --------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "format": CHECKPOINT_FORMAT,
            "model_config": asdict(self.model_config),
            "train_config": asdict(self.config),
            "epoch": self.epoch,
            "networks": {name: getattr(self, name).state_dict() for name in self.optimizers},
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "schedulers": {name: sch.state_dict() for name, sch in self.schedulers.items()},
            "rng": rng,
        }

    def save(self) -> None:
        """Write the checkpoint atomically: a crash mid-write leaves the previous one intact."""
        with atomic_path(self.checkpoint) as tmp:
            torch.save(self.state_dict(), tmp)

    def resume(self) -> bool:
        """Load the checkpoint if it exists and was written with this exact configuration."""
        if not self.checkpoint.is_file():
            return False
        state = load_checkpoint(self.checkpoint)
        current = {"model_config": asdict(self.model_config), "train_config": asdict(self.config)}
        if any(_comparable(state[key], RESUME_IGNORES[key]) != _comparable(value, RESUME_IGNORES[key])
               for key, value in current.items()):
            tqdm.write(f"{self.checkpoint} was trained with other settings: starting from scratch")
            return False
        for name, net_state in state["networks"].items():
            getattr(self, name).load_state_dict(net_state)
        for name, opt_state in state["optimizers"].items():
            self.optimizers[name].load_state_dict(opt_state)
        for name, sch_state in state["schedulers"].items():
            self.schedulers[name].load_state_dict(sch_state)
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.epoch = state["epoch"]
        tqdm.write(f"resuming {self.checkpoint} after epoch {self.epoch}")
        return True

    # -- logging ------------------------------------------------------------------------------

    def _live(self, resumed: bool):
        if self.live_dir is None:
            return None
        from dvclive import Live

        return Live(str(self.live_dir), resume=resumed, save_dvc_exp=False, dvcyaml=None)

    def _log(self, live, means: dict[str, float], samples: dict[str, Tensor]) -> None:
        # Step = finished epochs, also after a resume, which re-logs the epochs since the checkpoint.
        live.step = self.epoch
        for name, value in means.items():
            live.log_metric(f"train/{name}", value)
        live.log_metric("train/lr_generator", self.optimizers["generator"].param_groups[0]["lr"])
        if self.epoch % self.config.sample_every == 0 or self.epoch == self.config.epochs:
            live.log_image(f"samples/epoch-{self.epoch:04d}.png", self.sample_grid(samples))
        live.next_step()

    def sample_batch(self, count: int = 8) -> dict[str, Tensor]:
        """Fixed pairs for the sample grids: different-image pairs first, the anonymisation case."""
        order = np.argsort(self.data.same_image, kind="stable")[:count]
        items = [self.data[int(index)] for index in order]
        return {key: torch.stack([item[key] for item in items]) for key in items[0]}

    @torch.no_grad()
    def sample_grid(self, batch: dict[str, Tensor]) -> Image.Image:
        """Rows: condition, source context, output (eval mode), source."""
        self.generator.eval()
        x = self.inputs(batch)
        with self.autocast:
            generated = self.generator(x.condition, x.context, x.condition_maps, x.source_maps)
        self.generator.train()
        rows = [np.concatenate(list(to_uint8(images)), axis=1)
                for images in (x.condition, x.context, generated, x.source)]
        return Image.fromarray(np.concatenate(rows, axis=0))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A training checkpoint, on CPU, with a clear error for a file that is not one.

    Memory-mapped: inference reads only the generator's tensors, not the optimiser states.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # torch raises many types for corrupt or foreign files
        raise ValueError(f"{path} is not a readable AnonyGAN checkpoint: {error}") from error
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an AnonyGAN checkpoint (format {CHECKPOINT_FORMAT})")
    return state


def _comparable(config: dict[str, Any], ignored: set[str] = frozenset()) -> dict[str, Any]:
    """A config without the `ignored` keys, tuples as lists (as they come back from a checkpoint)."""
    return {key: _comparable(value) if isinstance(value, dict)
            else list(value) if isinstance(value, tuple) else value
            for key, value in config.items() if key not in ignored}
