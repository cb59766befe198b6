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
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from baselines.ciagan.frame import network_inputs, random_boxes, to_network
from baselines.ciagan.model import CiaganConfig, Discriminator, Generator, Siamese, contrastive_loss
from facedata.prepared import PreparedDataset


@dataclass(frozen=True)
class TrainingConfig:
    """Optimisation settings; defaults are the authors' (run_training.py, train.py)."""

    epochs: int = 100
    batch_size: int = 16
    learning_rate: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.999)
    critic_steps: int = 1
    generator_steps: int = 3
    siamese_steps: int = 1
    contrastive_margin: float = 3.0
    frame_scale: float = 1.125
    augment_crop: tuple[float, float] | None = (0.5, 0.75)  # None: train on the test-time frame
    seed: int = 0
    workers: int = 0  # DataLoader processes decoding crops; 0 = in the training process
    log_every: int = 50  # iterations between logged losses
    sample_every: int = 10  # epochs between logged sample images

    def __post_init__(self) -> None:
        at_least = {"epochs": 1, "generator_steps": 1, "critic_steps": 0, "siamese_steps": 0, "log_every": 1,
                    "sample_every": 1, "workers": 0}
        for name, minimum in at_least.items():
            if getattr(self, name) < minimum:
                raise ValueError(f"CIAGAN {name} must be >= {minimum}, got {getattr(self, name)}")
        if self.batch_size < 2 or self.batch_size % 2:
            raise ValueError(f"CIAGAN batch_size must be an even number >= 2, got {self.batch_size}")
        if self.learning_rate <= 0 or self.contrastive_margin <= 0 or self.frame_scale < 1:
            raise ValueError("CIAGAN learning_rate and contrastive_margin must be > 0 and frame_scale >= 1; got "
                             f"{self.learning_rate}, {self.contrastive_margin}, {self.frame_scale}")
        if self.augment_crop is not None:
            low, high = self.augment_crop
            if not 0 < low <= high <= 1:
                raise ValueError(f"CIAGAN augment_crop must be [low, high] with 0 < low <= high <= 1, "
                                 f"got {self.augment_crop}")

    def iterations(self, photos: int) -> int:
        """Total iterations. The authors' epoch is photos / batch_size batches, and one iteration
        consumes siamese + 2 x critic + generator batches."""
        batches = self.siamese_steps + 2 * self.critic_steps + self.generator_steps
        return self.epochs * max(1, photos // (self.batch_size * batches))


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


class PairBatches(torch.utils.data.Sampler):
    """Endless batches of 2B photo indices, firsts then seconds: B/2 random pairs, B/2 same-identity pairs."""

    def __init__(self, labels: Sequence[int], batch_size: int, seed: int):
        self.batch_size = batch_size
        self.seed = seed
        by_identity: dict[int, list[int]] = {}
        for index, label in enumerate(labels):
            by_identity.setdefault(int(label), []).append(index)
        self.groups = [np.asarray(indices) for indices in by_identity.values()]

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng(self.seed)
        half = self.batch_size // 2
        while True:
            first_groups = rng.integers(len(self.groups), size=self.batch_size)
            # The first half pairs two independently drawn identities, the second half one identity twice.
            second_groups = np.concatenate([rng.integers(len(self.groups), size=half), first_groups[half:]])
            firsts = [self._photo(rng, group) for group in first_groups]
            seconds = [self._photo(rng, group) for group in second_groups]
            order = rng.permutation(self.batch_size)
            yield [firsts[i] for i in order] + [seconds[i] for i in order]

    def _photo(self, rng: np.random.Generator, group: int) -> int:
        photos = self.groups[group]
        return int(photos[rng.integers(len(photos))])


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class CiaganTrainer:
    """The three networks, their optimisers and the authors' update steps."""

    def __init__(self, config: CiaganConfig, training: TrainingConfig, device: torch.device | None = None):
        self.config, self.training = config, training
        self.device = device or default_device()
        torch.manual_seed(training.seed)
        self.generator = Generator(config)
        self.discriminator = Discriminator(config)
        self.siamese = Siamese(config)
        self.memory_format = torch.channels_last if self.device.type == "cuda" else torch.contiguous_format
        for network in self.networks:
            network.to(self.device, memory_format=self.memory_format)
        self.optimisers = {name: torch.optim.Adam(network.parameters(), lr=training.learning_rate,
                                                  betas=tuple(training.betas))
                           for name, network in zip(("generator", "discriminator", "siamese"), self.networks,
                                                    strict=True)}
        self.random = torch.Generator().manual_seed(training.seed)

    @property
    def networks(self) -> tuple[nn.Module, nn.Module, nn.Module]:
        return self.generator, self.discriminator, self.siamese

    def _train_only(self, network: nn.Module) -> None:
        """Let gradients reach only `network`'s parameters (they still flow through the others)."""
        for other in self.networks:
            other.requires_grad_(other is network)

    def _autocast(self):
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def pairs(self, planes: torch.Tensor, labels: torch.Tensor, augment: bool = True) -> Pairs:
        """Split a (2B, 7, H, W) uint8 batch of firsts-then-seconds into network-frame pairs."""
        planes = planes.to(self.device, non_blocking=True)
        boxes = None
        if augment and self.training.augment_crop is not None:
            boxes = random_boxes(len(planes), self.training.augment_crop, self.random).to(self.device)
        face, drawing, mask = to_network(planes, self.config.image_size, self.training.frame_scale, boxes,
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
        with self._autocast():
            loss = self._identity_loss(pairs.face[0], pairs.face[1], pairs.same)
        return self._update("siamese", loss)

    def critic_step(self, fake: Pairs, real: Pairs) -> float:
        with torch.no_grad(), self._autocast():
            generated = self.generate(fake)
        self._train_only(self.discriminator)
        with self._autocast():
            loss = (self._lsgan(generated, fake.drawing[0], real=False)
                    + self._lsgan(real.face[0], real.drawing[0], real=True))
        return self._update("discriminator", loss)

    def generator_step(self, pairs: Pairs) -> tuple[float, float]:
        """(adversarial, identity) losses before the update."""
        self._train_only(self.generator)
        with self._autocast():
            generated = self.generate(pairs)
            adversarial = self._lsgan(generated, pairs.drawing[0], real=True)
            identity = self._identity_loss(generated, pairs.face[1], torch.ones_like(pairs.same))
        self._update("generator", adversarial + identity)
        return adversarial.item(), identity.item()

    def _update(self, name: str, loss: torch.Tensor) -> float:
        optimiser = self.optimisers[name]
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
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

    def checkpoint(self, identities: Sequence[str], iteration: int) -> dict:
        """Everything needed to resume or to anonymise: configs, training identities, weights."""
        return {"config": asdict(self.config), "training": asdict(self.training),
                "identities": list(identities), "iteration": iteration,
                **{name: network.state_dict() for name, network in zip(("generator", "discriminator", "siamese"),
                                                                        self.networks, strict=True)}}
