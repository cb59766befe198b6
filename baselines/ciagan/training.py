"""CIAGAN training as the authors ran it: LSGAN with an identity-conditioned generator.

Each iteration draws fresh batches of image pairs (first, second): half of a batch pairs two
random identities, the other half two photos of one identity. Then, in order:

1. siamese step: contrastive loss between the embeddings of first and second photos, with the
   label "same identity" (full images, no mask);
2. critic step (x critic_steps): LSGAN on (image, landmark drawing): real first photos against
   the generator's output for another batch, composited into its first photo's context;
3. generator step (x generator_steps): the generator renders the first photo's masked face as
   the second photo's identity (one-hot); loss = LSGAN "real" score + contrastive loss pulling the
   composited output's embedding to the second photo's.

Images are in [0, 1]; all networks use Adam (lr 1e-4, betas 0.5 / 0.999 in the authors' runs).
The trainer follows `runtime.EpochTrainer`'s contract (checkpoints, exact resume,
non-finite stop, DVCLive), like AnonyGAN's.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm import tqdm

import runtime
from baselines.ciagan.anonymiser import render_planes
from baselines.ciagan.config import CiaganModelConfig, CiaganTrainConfig
from baselines.ciagan.frame import network_inputs, random_boxes, to_network
from baselines.ciagan.model import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_KIND,
    Discriminator,
    Generator,
    Siamese,
    contrastive_loss,
)
from facedata.prepared import PreparedDataset
from infra.errors import DataError

NETWORKS = ("generator", "discriminator", "siamese")
LOSS_NAMES = ("siamese", "discriminator", "generator_gan", "generator_identity")


def training_faces(pairs: pd.DataFrame, prepared: PreparedDataset) -> tuple[list[str], list[str], list[int]]:
    """(training identities in protocol order, keys of their prepared photos, identity index per key).

    Identities come from a training pair manifest in its order; CIAGAN trains on every prepared
    photo of them (whole identity folders, not AnonyGAN's pairs).
    """
    identities = list(dict.fromkeys(pairs["source_identity"].astype(str)))
    position = {identity: index for index, identity in enumerate(identities)}
    ok = prepared.ok
    ok = ok[ok["identity"].astype(str).isin(position)].sort_index()
    missing = sorted(set(identities) - set(ok["identity"].astype(str)))
    if missing:
        raise DataError(f"training identities without prepared photos in {prepared.root}: {', '.join(missing[:5])}")
    return identities, list(ok["key"]), [position[str(identity)] for identity in ok["identity"]]


@dataclass(frozen=True)
class Pairs:
    """A batch of (first, second) photos in the network frame, on the training device."""

    face: tuple[torch.Tensor, torch.Tensor]  # (B, 3, S, S) each
    drawing: tuple[torch.Tensor, torch.Tensor]
    mask: tuple[torch.Tensor, torch.Tensor]  # (B, 1, S, S) float 0/1
    identity: tuple[torch.Tensor, torch.Tensor]  # (B,) int64 training-identity indices

    @property
    def same(self) -> torch.Tensor:
        return self.identity[0] == self.identity[1]


class FaceSet(torch.utils.data.Dataset):
    """Prepared crops of the training identities as (7, H, W) uint8 planes (see `network_inputs`)."""

    def __init__(self, root, keys: Sequence[str], labels: Sequence[int]):
        self.root, self.keys, self.labels = root, list(keys), torch.as_tensor(labels, dtype=torch.int64)
        self._dataset: PreparedDataset | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._dataset is None:  # opened lazily, once per worker process
            self._dataset = PreparedDataset(self.root)
        key = self.keys[index]
        planes = network_inputs(self._dataset.crop(key)[None], self._dataset.mask(key)[None],
                                self._dataset.landmarks(key)[None])
        return planes[0], self.labels[index]


def pair_batches(labels: Sequence[int], batch_size: int, count: int, seed: int, epoch: int) -> list[list[int]]:
    """`count` batches of 2B photo indices, firsts then seconds: B/2 random pairs, B/2 same-identity pairs.

    The draw depends only on (seed, epoch), so a resumed run sees the same batches.
    """
    groups: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        groups.setdefault(int(label), []).append(index)
    members = [np.asarray(indices) for indices in groups.values()]
    rng = np.random.default_rng([seed, epoch])
    half = batch_size // 2

    def photo(group: int) -> int:
        return int(members[group][rng.integers(len(members[group]))])

    batches = []
    for _ in range(count):
        first_groups = rng.integers(len(members), size=batch_size)
        # The first half pairs two independently drawn identities, the second half one identity twice.
        second_groups = np.concatenate([rng.integers(len(members), size=half), first_groups[half:]])
        firsts, seconds = [photo(g) for g in first_groups], [photo(g) for g in second_groups]
        order = rng.permutation(batch_size)
        batches.append([firsts[i] for i in order] + [seconds[i] for i in order])
    return batches


class CiaganTrainer(runtime.EpochTrainer):
    """The three networks, their optimisers and the authors' update steps, trained by epochs."""

    kind, format_version, settings_name = CHECKPOINT_KIND, CHECKPOINT_FORMAT, "ciagan.train"
    resume_ignores = {"train_config": {"workers", "checkpoint_every", "sample_every", "resume"}}
    resume_changeable = {"train_config": {"learning_rate", "precision"}}

    def __init__(self, config: CiaganModelConfig, training: CiaganTrainConfig, faces: FaceSet | None = None,
                 checkpoint: Path = Path("checkpoint.pt"), live_dir: Path | None = None,
                 device: torch.device | None = None, identities: Sequence[str] = ()):
        self.config, self.training, self.faces = config, training, faces
        self.checkpoint, self.live_dir = Path(checkpoint), live_dir
        self.identities = list(identities)
        self.device = device or runtime.default_device()
        self.memory_format = runtime.memory_format(self.device)
        self.autocast = runtime.autocast(self.device, training.precision)
        torch.manual_seed(training.seed)
        self.generator = Generator(config)
        self.discriminator = Discriminator(config)
        self.siamese = Siamese(config)
        for network in self.networks:
            network.to(self.device, memory_format=self.memory_format)
        self.optimisers = {name: torch.optim.Adam(network.parameters(), lr=training.learning_rate,
                                                  betas=training.betas)
                           for name, network in zip(NETWORKS, self.networks, strict=True)}
        self.random = torch.Generator()
        self.epoch = 0
        self.continued = []

    epochs = property(lambda self: self.training.epochs)
    checkpoint_every = property(lambda self: self.training.checkpoint_every)
    sample_every = property(lambda self: self.training.sample_every)
    resume_rule = property(lambda self: self.training.resume)

    @property
    def steps_per_epoch(self) -> int:
        """Iterations per epoch (one iteration = siamese, critic and generator steps)."""
        return self.training.iterations_per_epoch(len(self.faces))

    @property
    def networks(self) -> tuple[nn.Module, nn.Module, nn.Module]:
        return self.generator, self.discriminator, self.siamese

    def settings(self) -> dict[str, dict[str, Any]]:
        return {"model_config": asdict(self.config), "train_config": asdict(self.training),
                "data": {"identities": self.identities}}

    def modules(self) -> dict[str, Any]:
        return {**dict(zip(NETWORKS, self.networks, strict=True)),
                **{f"optimizer_{name}": optimiser for name, optimiser in self.optimisers.items()}}

    def restore_settings(self) -> None:
        """The optimiser states carry the checkpoint's learning rate: set this run's."""
        for optimiser in self.optimisers.values():
            for group in optimiser.param_groups:
                group["lr"] = self.training.learning_rate

    def _train_only(self, network: nn.Module) -> None:
        """Let gradients reach only `network`'s parameters (they still flow through the others)."""
        for other in self.networks:
            other.requires_grad_(other is network)

    def pairs(self, planes: torch.Tensor, labels: torch.Tensor, augment: bool = True) -> Pairs:
        """Split a (2B, 7, H, W) uint8 batch of firsts-then-seconds into network-frame pairs."""
        planes = planes.to(self.device, non_blocking=True)
        boxes = None
        if augment and self.training.augment_crop is not None:
            boxes = random_boxes(len(planes), self.training.augment_crop, self.random).to(self.device)
        face, drawing, mask = to_network(planes, self.config.image_size, self.config.frame_scale, boxes,
                                         self.memory_format)
        half = len(planes) // 2
        labels = labels.to(self.device)
        split = lambda tensor: (tensor[:half], tensor[half:])  # noqa: E731
        return Pairs(split(face), split(drawing), split(mask), split(labels))

    def generate(self, pairs: Pairs) -> torch.Tensor:
        """The generator's face for the firsts as the seconds' identities, composited into the firsts."""
        face, mask = pairs.face[0], pairs.mask[0]
        one_hot = F.one_hot(pairs.identity[1], self.config.identities).float()
        raw = self.generator(torch.cat([pairs.drawing[0], face * (1 - mask)], dim=1), one_hot)
        return face * (1 - mask) + raw.float() * mask

    def _lsgan(self, images: torch.Tensor, drawing: torch.Tensor, real: bool) -> torch.Tensor:
        scores = self.discriminator(torch.cat([images, drawing], dim=1)).float()
        return F.mse_loss(scores, torch.full_like(scores, 1.0 if real else 0.0))

    def _identity_loss(self, first: torch.Tensor, second: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
        return contrastive_loss(self.siamese(first).float(), self.siamese(second).float(), same,
                                self.training.contrastive_margin)

    def siamese_step(self, pairs: Pairs) -> float:
        self._train_only(self.siamese)
        with self.autocast:
            loss = self._identity_loss(pairs.face[0], pairs.face[1], pairs.same)
        return self._update("siamese", loss)

    def critic_step(self, fake: Pairs, real: Pairs) -> float:
        with torch.no_grad(), self.autocast:
            generated = self.generate(fake)
        self._train_only(self.discriminator)
        with self.autocast:
            loss = (self._lsgan(generated, fake.drawing[0], real=False)
                    + self._lsgan(real.face[0], real.drawing[0], real=True))
        return self._update("discriminator", loss)

    def generator_step(self, pairs: Pairs) -> tuple[float, float]:
        """(adversarial, identity) losses before the update."""
        self._train_only(self.generator)
        with self.autocast:
            generated = self.generate(pairs)
            adversarial = self._lsgan(generated, pairs.drawing[0], real=True)
            identity = self._identity_loss(generated, pairs.face[1], torch.ones_like(pairs.same))
        runtime.update(self.optimisers["generator"], adversarial + identity)
        return adversarial.item(), identity.item()

    def _update(self, name: str, loss: torch.Tensor) -> float:
        runtime.update(self.optimisers[name], loss)
        return loss.item()

    def iteration(self, batches: Iterator[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
        """One round of the authors' schedule; mean losses per network."""
        losses: dict[str, list[float]] = {"siamese": [], "discriminator": [], "generator_gan": [],
                                          "generator_identity": []}
        for _ in range(self.training.siamese_steps):
            losses["siamese"].append(self.siamese_step(self.pairs(*next(batches))))
        for _ in range(self.training.critic_steps):
            fake, real = self.pairs(*next(batches)), self.pairs(*next(batches))
            losses["discriminator"].append(self.critic_step(fake, real))
        for _ in range(self.training.generator_steps):
            adversarial, identity = self.generator_step(self.pairs(*next(batches)))
            losses["generator_gan"].append(adversarial)
            losses["generator_identity"].append(identity)
        return {name: float(np.mean(values)) for name, values in losses.items() if values}

    # -- epochs -------------------------------------------------------------------------------

    def train_epoch(self, progress: tqdm) -> dict[str, float]:
        """One epoch of iterations on batches drawn for (seed, epoch); returns the mean of each loss."""
        for network in self.networks:
            network.train()
        cfg = self.training
        iterations = self.steps_per_epoch
        # Augmentation boxes are drawn from a generator seeded per epoch, so a resume redraws them exactly.
        self.random.manual_seed(int(np.random.SeedSequence([cfg.seed, self.epoch]).generate_state(1)[0]))
        batches = pair_batches(self.faces.labels.tolist(), cfg.batch_size, iterations * cfg.batches_per_iteration,
                               cfg.seed, self.epoch)
        loader = iter(torch.utils.data.DataLoader(self.faces, batch_sampler=batches, num_workers=cfg.workers,
                                                  pin_memory=self.device.type == "cuda"))
        totals = dict.fromkeys(LOSS_NAMES, 0.0)
        for index in range(iterations):
            losses = self.iteration(loader)
            self.check_finite(losses, index + 1)
            for name, value in losses.items():
                totals[name] += value
            progress.update()
        return {name: total / iterations for name, total in totals.items()}

    @torch.no_grad()
    def sample_grid(self) -> Image.Image:
        """One photo of each of the first eight identities (top) rendered as the next identity (bottom)."""
        labels = self.faces.labels.tolist()
        shown = [labels.index(label) for label in sorted(set(labels))[:8]]
        planes, sample_labels = (torch.stack(items) for items in zip(*(self.faces[i] for i in shown), strict=True))
        targets = ((sample_labels + 1) % self.config.identities).numpy()
        self.generator.eval()  # spectral norm: no power iteration on sample batches
        try:
            outputs = render_planes(self.generator, planes.to(self.device), targets, self.training.precision)
        finally:
            self.generator.train()
        sources = planes[:, :3].permute(0, 2, 3, 1).numpy()
        return Image.fromarray(np.concatenate([np.concatenate(list(row), axis=1) for row in (sources, outputs)]))
