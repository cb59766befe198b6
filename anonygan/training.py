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
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm import tqdm

import runtime
from anonygan import losses
from anonygan.config import ModelConfig, TrainConfig
from anonygan.data import NetworkInputs, PairData, hybrid_batches, to_uint8
from anonygan.model import CHECKPOINT_FORMAT, CHECKPOINT_KIND, build

LOSS_NAMES = ("g_adversarial", "g_pose", "g_wfm", "g_reconstruction", "g_total", "d_app", "d_lm")
NETWORKS = ("generator", "d_app", "d_lm")


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
        # The stage launched train.processes processes, which TrainConfig checked divides batches_per_step.
        self.batches_per_process = config.batches_per_step // self.world_size

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
        share = 1.0 / (len(batches) * self.world_size)
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
