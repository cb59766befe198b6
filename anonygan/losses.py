"""AnonyGAN's loss terms (section 3.3, eqs. 2-4), each on the samples it applies to."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from anonygan.model import composite

RECONSTRUCTION_REGIONS = ("image", "face")


def adversarial(logits: Tensor, real: bool) -> Tensor:
    """BCE with logits against hard labels: 1 for real, 0 for fake, over every patch."""
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


def discriminator(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """(BCE(real, 1) + BCE(fake, 0)) / 2."""
    return (adversarial(real_logits, True) + adversarial(fake_logits, False)) / 2


def weak_feature_matching(fake_features: list[Tensor], real_features: list[Tensor], layer_weight: float = 1.0
                          ) -> Tensor:
    """Eq. (4): sum over layers of the mean L1 between D_app features of (I_g, I_c) and (I_s, I_c), each
    layer weighted `layer_weight` (the authors' code: 4 / (4 layers + 1) = 0.8).

    Real features are targets (detached); only the generator learns from this term.
    """
    return layer_weight * sum(F.l1_loss(fake, real.detach())
                              for fake, real in zip(fake_features, real_features, strict=True))


def reconstruction(generated: Tensor, source: Tensor, mask: Tensor, region: str) -> Tensor:
    """L1(I_g, I_s) on same-image samples, averaged over every pixel.

    region "image": the whole image (the paper's ||I_g - I_s||_1, and what the authors' code
    computed because its mask was normalised to [-1, 1]). region "face": I_g composited into
    I_s through the mask first, so only the face region is supervised (the code's intent).
    """
    if region == "face":
        generated = composite(generated, source, mask)
    elif region != "image":
        raise ValueError(f"reconstruction region must be one of {RECONSTRUCTION_REGIONS}; got {region!r}")
    return F.l1_loss(generated, source)
