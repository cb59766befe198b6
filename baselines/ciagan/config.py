"""CIAGAN's settings (params `ciagan.model`, `ciagan.train`, `anonymisers.ciagan`); importable without torch."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Literal

from infra.settings import Check, FieldError, above, at_least, even


def _power_of_two(value: int) -> bool:
    return value >= 8 and value & (value - 1) == 0


@dataclass(frozen=True)
class CiaganModelConfig:
    """Architecture and network frame; the defaults are the authors' (their released generator has these sizes)."""

    #: One-hot size: the number of training identities, counted from the data (not a parameter).
    identities: int = field(default=1200, metadata={"params": False})
    image_size: Annotated[int, Check(_power_of_two, "a power of two >= 8")] = 128  # network frame S x S
    # The crop is squashed to round(frame_scale * S) square and the centre S x S cut (authors' loader).
    frame_scale: Annotated[float, at_least(1.0)] = 1.125
    generator_width: Annotated[int, even, at_least(2)] = 32  # channels after the first down block
    identity_width: Annotated[int, Check(lambda w: w >= 8 and w % 8 == 0, "a multiple of 8")] = 256  # MLP width
    discriminator_width: Annotated[int, at_least(1)] = 64
    siamese_width: Annotated[int, at_least(1)] = 64
    embedding_dim: Annotated[int, at_least(1)] = 1200  # siamese output; the authors size it like the one-hot

    @property
    def depth(self) -> int:
        """Down blocks from the image to the 4 x 4 bottleneck."""
        return int(math.log2(self.image_size // 4))


@dataclass(frozen=True)
class CiaganTrainConfig:
    """Optimisation settings; defaults are the authors' (run_training.py, train.py)."""

    epochs: Annotated[int, at_least(1)] = 100  # authors' epoch: photos / (batch_size x 6 batches per iteration)
    batch_size: Annotated[int, even, at_least(2)] = 16  # pairs; half random identities, half the same identity
    learning_rate: Annotated[float, above(0)] = 1e-4  # all three networks
    betas: tuple[Annotated[float, at_least(0)], Annotated[float, at_least(0)]] = (0.5, 0.999)
    siamese_steps: Annotated[int, at_least(0)] = 1  # per iteration, in this order: siamese, critic, generator
    critic_steps: Annotated[int, at_least(0)] = 1
    generator_steps: Annotated[int, at_least(1)] = 3
    contrastive_margin: Annotated[float, above(0)] = 3.0
    # Training boxes span this share of the squashed frame (authors' augmentation); None: the test-time frame.
    augment_crop: tuple[Annotated[float, above(0)], Annotated[float, above(0)]] | None = (0.5, 0.75)
    seed: Annotated[int, at_least(0)] = 0
    workers: Annotated[int, at_least(0)] = 8  # DataLoader processes decoding crops; 0 = in the training process
    checkpoint_every: Annotated[int, at_least(1)] = 5  # epochs
    sample_every: Annotated[int, at_least(1)] = 10  # epochs between sample images
    precision: Literal["bf16", "fp32"] = "fp32"  # fp32 (the authors') | bf16 autocast on CUDA; CPU always runs fp32
    resume: Literal["same_settings", "continue"] = "same_settings"  # see runtime.EpochTrainer.resume

    def __post_init__(self) -> None:
        if self.augment_crop is not None and not self.augment_crop[0] <= self.augment_crop[1] <= 1:
            raise FieldError("augment_crop", f"must be [low, high] with 0 < low <= high <= 1; got "
                                             f"{list(self.augment_crop)}")

    @property
    def batches_per_iteration(self) -> int:
        return self.siamese_steps + 2 * self.critic_steps + self.generator_steps

    def iterations_per_epoch(self, photos: int) -> int:
        """The authors' epoch is photos / batch_size batches; one iteration consumes several batches."""
        return max(1, photos // (self.batch_size * self.batches_per_iteration))


@dataclass(frozen=True)
class CiaganInferenceConfig:
    """How a CIAGAN generator anonymises the test sets (params `anonymisers.ciagan`)."""

    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 autocast on CUDA only; CPU always runs fp32
    # update: as the authors' test.py (no eval()): a spectral-norm power iteration per forward, one face per
    # forward | frozen: eval(), the stored u and v, batched
    spectral_norm: Literal["update", "frozen"] = "update"


@dataclass(frozen=True)
class CiaganConfig:
    """CIAGAN's architecture and training run (`train-ciagan`)."""

    model: CiaganModelConfig = field(default_factory=CiaganModelConfig)
    train: CiaganTrainConfig = field(default_factory=CiaganTrainConfig)
