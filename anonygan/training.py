"""Hybrid adversarial training of AnonyGAN: one step = G, then D_app, then D_lm (the authors' order).

A step averages the gradient over `batches_per_step` micro-batches of `batch_size` samples
(BatchNorm sees one micro-batch at a time): the authors' 2 GPUs x 32. One process accumulates
them; a torchrun launch of several processes splits them and sums the gradients over the
processes, so a step computes the same update either way (dropout masks are seeded per micro-batch).

Resumable (`runtime.EpochTrainer`): a checkpoint holds the networks, optimisers, the
global RNG state and the number of finished epochs; batches depend only on (seed, epoch) and the
learning rate only on (epoch, step), so an interrupted run resumed from its last checkpoint
continues exactly as an uninterrupted one (on CPU).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm import tqdm

import runtime
from anonygan import losses
from anonygan.data import NetworkInputs, PairData, hybrid_batches, to_uint8
from anonygan.model import CHECKPOINT_FORMAT, CHECKPOINT_KIND, ModelConfig, build
from infra.errors import ParamsError
from infra.settings import FieldError, above, at_least

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
    batch_size: Annotated[int, at_least(1)] = 32  # samples per micro-batch, BatchNorm's batch (per GPU in the authors')
    batches_per_step: Annotated[int, at_least(1)] = 2  # micro-batches per optimiser step (the authors: 2 GPUs x 32)
    processes: Annotated[int, at_least(1)] = 1  # torchrun --nproc_per_node (GPUs); divides batches_per_step
    lr_generator: Annotated[float, above(0)] = 2e-4
    lr_discriminator: Annotated[float, above(0)] = 2e-6
    betas: tuple[Annotated[float, at_least(0)], Annotated[float, at_least(0)]] = (0.5, 0.999)
    lr_decay_start_epoch: Annotated[int, at_least(0)] = 500  # constant until here, then linear to 0 at the end
    lr_schedule: Literal["authors", "epochwise"] = "authors"  # see lr_factor
    context_matching: bool = True  # the wFM term
    wfm_samples: Literal["all", "different"] = "all"  # all (authors' code) | different (different-image pairs: paper)
    wfm_layer_weight: Annotated[float, at_least(0)] = 0.8  # each D_app layer's L1: 4 / (4 + 1) (authors' code)
    landmark_maps: Literal["resized", "one_hot"] = "resized"  # resized (authors' training loader) | one_hot (test)
    reconstruction_region: Literal["image", "face"] = "image"  # image (paper; authors' code in effect) | face
    weights: LossWeights = field(default_factory=LossWeights)
    checkpoint_every: Annotated[int, at_least(1)] = 5  # epochs
    sample_every: Annotated[int, at_least(1)] = 10  # epochs; a sample grid of fixed pairs
    workers: Annotated[int, at_least(0)] = 2  # data loader processes
    precision: Literal["bf16", "fp32"] = "fp32"  # fp32 (the authors') | bf16 autocast on CUDA; CPU always runs fp32
    resume: Literal["same_settings", "continue"] = "same_settings"  # see runtime.EpochTrainer.resume

    def __post_init__(self):
        if self.samples_per_epoch < self.step_samples:
            raise FieldError("samples_per_epoch", f"({self.samples_per_epoch}) must be at least batch_size x "
                                                  f"batches_per_step ({self.step_samples})")
        if self.batches_per_step % self.processes:
            raise FieldError("processes", f"({self.processes}) must divide batches_per_step "
                                          f"({self.batches_per_step}): each process takes an equal share of a step")
        if any(beta >= 1 for beta in self.betas):
            raise FieldError("betas", f"must both be below 1; got {list(self.betas)}")

    @property
    def step_samples(self) -> int:
        """Samples per optimiser step, over all processes."""
        return self.batch_size * self.batches_per_step

    @property
    def steps_per_epoch(self) -> int:
        return self.samples_per_epoch // self.step_samples

    def lr_factor(self, epoch: int, step: int) -> float:
        """The learning-rate factor of step `step` of epoch `epoch` (both from 0).

        Constant 1, then linear: factor(e) = 1 - max(0, e + k - start) / (epochs - start + 1).
        authors: their LambdaLR (k = 2) stepped after every batch with the epoch number, so an epoch's
        first step still runs at the previous epoch's factor and the last epoch trains at 0 after its
        first step. epochwise: k = 1 for the whole epoch, so the last epoch trains at 1 / (epochs - start + 1).
        With no epoch after the start the rate stays constant.
        """
        span = self.epochs - self.lr_decay_start_epoch + 1
        if span <= 1:
            return 1.0
        if self.lr_schedule == "epochwise":
            return 1.0 - max(0, epoch + 1 - self.lr_decay_start_epoch) / span
        factor_epoch = epoch - 1 if step == 0 and epoch > 0 else epoch
        return 1.0 - max(0, factor_epoch + 2 - self.lr_decay_start_epoch) / span


class Trainer(runtime.EpochTrainer):
    """Builds G, D_app, D_lm and their optimisers for one variant and trains them on `data`.

    `data` is needed by `fit` only; `step` takes batches from anywhere. Inside a process group of
    several processes (torchrun), each process takes its share of every step's micro-batches.
    """

    kind, format_version, settings_name = CHECKPOINT_KIND, CHECKPOINT_FORMAT, "train"
    #: Settings that do not change what is computed: a checkpoint written under other values resumes.
    resume_ignores = {"train_config": {"workers", "checkpoint_every", "sample_every", "processes", "resume"}}
    resume_changeable = {"train_config": {"lr_generator", "lr_discriminator", "precision"}}

    def __init__(self, model_config: ModelConfig, config: TrainConfig, data: PairData | None,
                 checkpoint: Path, live_dir: Path | None = None, device: torch.device | None = None):
        self.model_config, self.config, self.data = model_config, config, data
        self.checkpoint, self.live_dir = Path(checkpoint), live_dir
        self.device = device or runtime.default_device()
        self.memory_format = runtime.memory_format(self.device)
        self.autocast = runtime.autocast(self.device, config.precision)
        if config.batches_per_step % self.processes:
            raise ParamsError(f"train.batches_per_step ({config.batches_per_step}) must be a multiple of the "
                              f"number of processes ({self.processes})")
        self.batches_per_process = config.batches_per_step // self.processes

        torch.manual_seed(config.seed)
        networks = build(model_config)
        self.generator, self.d_app, self.d_lm = (
            net.to(self.device, memory_format=self.memory_format) for net in networks)
        self.base_lr = {"generator": config.lr_generator, "d_app": config.lr_discriminator,
                        "d_lm": config.lr_discriminator}
        self.optimizers = {name: torch.optim.Adam(getattr(self, name).parameters(), lr=self.base_lr[name],
                                                  betas=config.betas)
                           for name in NETWORKS}
        self.epoch = 0
        self.continued = []
        self._samples: dict[str, Tensor] | None = None

    epochs = property(lambda self: self.config.epochs)
    checkpoint_every = property(lambda self: self.config.checkpoint_every)
    sample_every = property(lambda self: self.config.sample_every)
    steps_per_epoch = property(lambda self: self.config.steps_per_epoch)
    resume_rule = property(lambda self: self.config.resume)

    def settings(self) -> dict[str, dict[str, Any]]:
        return {"model_config": asdict(self.model_config), "train_config": asdict(self.config)}

    def modules(self) -> dict[str, Any]:
        return {**{name: getattr(self, name) for name in NETWORKS},
                **{f"optimizer_{name}": optimizer for name, optimizer in self.optimizers.items()}}

    def restore_settings(self) -> None:
        """Nothing to do: the learning rates are set from the settings before every step."""

    # -- one step -----------------------------------------------------------------------------

    def inputs(self, batch: dict[str, Tensor], training: bool = True) -> NetworkInputs:
        """Network inputs; landmark maps as `train.landmark_maps` in training, exact one-hot otherwise."""
        return NetworkInputs.build(batch, self.model_config.landmark_indices, self.device, self.memory_format,
                                   self.config.landmark_maps if training else "one_hot")

    def step(self, batches: Sequence[NetworkInputs], seeds: Sequence[int] | None = None) -> dict[str, Tensor]:
        """One update of G, then D_app, then D_lm (the authors' order) from this process's micro-batches.

        Each gradient is the mean over the step's micro-batches of every process; `seeds` (one per
        micro-batch) fix the dropout masks. Returns the losses, averaged the same way and detached.
        """
        share = 1.0 / (len(batches) * self.processes)
        totals = dict.fromkeys(LOSS_NAMES, torch.zeros((), device=self.device))
        generated = []
        self.optimizers["generator"].zero_grad(set_to_none=True)
        with runtime.frozen(self.d_app, self.d_lm):  # their gradients from this loss would be discarded
            for index, x in enumerate(batches):
                if seeds is not None:
                    torch.manual_seed(seeds[index])
                with self.autocast:
                    fake = self.generator(x.condition, x.context, x.condition_maps, x.source_maps)
                    terms = self.generator_losses(x, fake)
                    g_total = sum(getattr(self.config.weights, name) * value for name, value in terms.items())
                (g_total * share).backward()
                generated.append(fake.detach())
                for name, value in {**{f"g_{name}": value for name, value in terms.items()},
                                    "g_total": g_total}.items():
                    totals[name] = totals[name] + value.detach().float() * share
        self._apply("generator")

        for name in ("d_app", "d_lm"):
            discriminator = getattr(self, name)
            self.optimizers[name].zero_grad(set_to_none=True)
            for x, fake in zip(batches, generated, strict=True):
                condition = x.condition if name == "d_app" else x.source_maps
                with self.autocast:
                    loss = losses.discriminator(discriminator(x.source, condition)[-1],
                                                discriminator(fake, condition)[-1])
                (loss * share).backward()
                totals[name] = totals[name] + loss.detach().float() * share
            self._apply(name)
        summed = runtime.sum_over_processes(torch.stack([totals[name] for name in LOSS_NAMES]))
        return dict(zip(LOSS_NAMES, summed, strict=True))

    def _apply(self, name: str) -> None:
        runtime.sum_gradients(getattr(self, name).parameters())
        self.optimizers[name].step()

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
        matched = ~x.same_image if cfg.wfm_samples == "different" else None  # None: every sample
        if cfg.context_matching and (matched is None or matched.any()):
            with torch.no_grad():
                real_features = self.d_app(x.source, x.condition)

            def samples(features: list[Tensor]) -> list[Tensor]:
                return [f if matched is None else f[matched] for f in features[:-1]]

            terms["wfm"] = losses.weak_feature_matching(samples(fake_features), samples(real_features),
                                                        cfg.wfm_layer_weight)
        same = x.same_image
        if same.any():
            terms["reconstruction"] = losses.reconstruction(generated[same], x.source[same], x.mask[same],
                                                            cfg.reconstruction_region)
        return terms

    # -- epochs -------------------------------------------------------------------------------

    def loader(self, epoch: int) -> DataLoader:
        """This process's micro-batches of the epoch, in step order.

        The epoch's micro-batches are drawn for (seed, epoch) whatever the number of processes; step s
        takes numbers s * batches_per_step onwards, and process r the r-th equal share of them.
        """
        cfg = self.config
        batches = hybrid_batches(self.data.same_image, cfg.batch_size, cfg.steps_per_epoch * cfg.batches_per_step,
                                 cfg.seed, epoch)
        mine = [batch for number, batch in enumerate(batches)
                if number % cfg.batches_per_step // self.batches_per_process == self.rank]
        return DataLoader(self.data, batch_sampler=mine, num_workers=cfg.workers,
                          pin_memory=self.device.type == "cuda")

    def set_learning_rates(self, step: int) -> None:
        factor = self.config.lr_factor(self.epoch, step)
        for name, optimizer in self.optimizers.items():
            for group in optimizer.param_groups:
                group["lr"] = self.base_lr[name] * factor

    def dropout_seed(self, step: int, micro_batch: int) -> int:
        """The seed of one micro-batch (numbered within its step over all processes) of this epoch."""
        sequence = np.random.SeedSequence([self.config.seed, self.epoch, step, micro_batch])
        return int(sequence.generate_state(1)[0])

    def train_epoch(self, progress: tqdm) -> dict[str, float]:
        """One epoch of steps; returns the mean of each loss and the generator's last learning rate."""
        for net in (self.generator, self.d_app, self.d_lm):
            net.train()
        totals = dict.fromkeys(LOSS_NAMES, 0.0)
        micro_batches = iter(self.loader(self.epoch))
        first = self.rank * self.batches_per_process
        for step in range(self.config.steps_per_epoch):
            self.set_learning_rates(step)
            batches = [self.inputs(next(micro_batches)) for _ in range(self.batches_per_process)]
            seeds = [self.dropout_seed(step, first + n) for n in range(self.batches_per_process)]
            step_losses = self.step(batches, seeds)
            values = dict(zip(LOSS_NAMES, torch.stack(list(step_losses.values())).tolist(), strict=True))
            self.check_finite(values, step + 1)  # one device sync per step
            for name, value in values.items():
                totals[name] += value
            progress.update()
            progress.set_postfix({name: f"{values[name]:.3f}" for name in ("g_total", "d_app", "d_lm")},
                                 refresh=False)
        means = {name: total / self.config.steps_per_epoch for name, total in totals.items()}
        return means | {"lr_generator": self.optimizers["generator"].param_groups[0]["lr"]}

    # -- samples ------------------------------------------------------------------------------

    def sample_batch(self, count: int = 8) -> dict[str, Tensor]:
        """Fixed pairs for the sample grids: different-image pairs first, the anonymisation case."""
        order = np.argsort(self.data.same_image, kind="stable")[:count]
        items = [self.data[int(index)] for index in order]
        return {key: torch.stack([item[key] for item in items]) for key in items[0]}

    @torch.no_grad()
    def sample_grid(self) -> Image.Image:
        """Rows: condition, source context, output (eval mode, test-time maps), source."""
        if self._samples is None:
            self._samples = self.sample_batch()
        self.generator.eval()
        x = self.inputs(self._samples, training=False)
        with self.autocast:
            generated = self.generator(x.condition, x.context, x.condition_maps, x.source_maps)
        self.generator.train()
        rows = [np.concatenate(list(to_uint8(images)), axis=1)
                for images in (x.condition, x.context, generated, x.source)]
        return Image.fromarray(np.concatenate(rows, axis=0))
