"""AnonyGAN's settings: the architecture (`model`), the training run (`train`) and inference (`anonymisers.anonygan`).

Plain frozen dataclasses, importable without torch, so that checking params.yaml loads no model code.
Each default is the authors' (file and line in docs/decisions.md); params.yaml holds the same values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from facedata.landmarks import LANDMARK_SETS
from infra.settings import FieldError, above, at_least, between, odd

#: The encoders halve the crop twice and the decoders double it back, so crop sides are multiples of 4.
SIDE_MULTIPLE = 4


#: The PatchGANs shrink a side s to floor(s / 16) - 2 logits (four stride-2 and two stride-1 4x4 convs);
#: at least one logit needs s >= 48.
SMALLEST_SIDE = 48


def crop_size_problem(height: int, width: int) -> str | None:
    """Why AnonyGAN's networks cannot take (height, width) crops, or None."""
    for name, side in (("height", height), ("width", width)):
        if side % SIDE_MULTIPLE or side < SMALLEST_SIDE:
            fitting = max(SMALLEST_SIDE, round(side / SIDE_MULTIPLE) * SIDE_MULTIPLE)
            return (f"crop_{name} = {side}: AnonyGAN needs crop sides that are multiples of {SIDE_MULTIPLE} (its "
                    f"encoders halve the crop twice, its decoders double it back) and at least {SMALLEST_SIDE} px "
                    f"(its PatchGAN discriminators need one output cell), e.g. {fitting}")
    return None


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of one variant. Defaults are the authors' full model (about 28.4 M parameters)."""

    landmarks: Literal[68, 29] = 68  # 68 | 29 (CIAGAN's subset)
    landmark_attention: bool = True  # eq. (1); off in the (CM,LA) ablation rows
    base_channels: Annotated[int, at_least(2)] = 64  # encoder width; the graph blocks work at 4x this
    graph_blocks: Annotated[int, at_least(1)] = 6  # K
    attention_kernel: Annotated[int, odd, at_least(1)] = 3  # J in eq. (1)
    dropout: Annotated[float, between(0.0, 0.99)] = 0.5
    discriminator_channels: Annotated[int, at_least(1)] = 64
    # Authors' code: I_g = G * A + I_sc * (1 - A); the paper: I_g = I_c * A + G * (1 - A).
    output_blend: Literal["context", "condition"] = "context"
    # The attention decoder's last 1x1 layer: conv_transpose (authors' code, ConvTranspose2d(64, 1, 1): default
    # init U(-1, 1), weight [64, 1, 1, 1]) | conv (Conv2d(64, 1, 1): U(-1/8, 1/8), weight [1, 64, 1, 1]); same map.
    attention_output: Literal["conv_transpose", "conv"] = "conv_transpose"

    @property
    def landmark_indices(self) -> tuple[int, ...]:
        return LANDMARK_SETS[self.landmarks]


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


@dataclass(frozen=True)
class InferenceConfig:
    """How a trained generator anonymises the test sets (params `anonymisers.anonygan`)."""

    # raw: the whole generator output, as the authors' test script saved it | composited: only the
    # face region (mask) comes from the generator, the rest is the source crop.
    output: Literal["raw", "composited"] = "raw"
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 autocast on CUDA only; CPU always runs fp32
    # round: each level to the nearest | truncate: toward zero, as the authors' tensor2im (src/models/utils.py l.60-65)
    quantise: Literal["round", "truncate"] = "round"
