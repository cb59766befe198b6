"""CIAGAN's networks (Maximov et al., CVPR 2020), sized as the authors' code at 128 x 128.

- Generator: U-Net-like stack of residual down blocks to a 4 x 4 bottleneck, where the target
  identity (one-hot over the training identities, through an MLP and three convolutions) is
  concatenated and fused; four residual blocks; residual up blocks back to full size. Every
  convolution is spectrally normalised and reflect-padded; features are instance-normalised.
- Discriminator: residual down blocks to 4 x 4, two dense layers, one score (LSGAN).
- Siamese identity network: a small ResNet (two basic blocks per stage) to an embedding that
  the contrastive loss compares.

Depth follows the image size (log2(size / 4) down blocks), so a 64-pixel configuration for tests
is the same code. Channel widths scale with `width`; the authors' sizes are the defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import runtime
from baselines.ciagan.config import CiaganModelConfig

CHECKPOINT_KIND, CHECKPOINT_FORMAT = "ciagan", 2


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by `baselines.ciagan.training.CiaganTrainer`, on CPU; a DataError otherwise.

    It holds `model_config` (CiaganModelConfig as a dict), `data.identities` (the training identities in
    one-hot order) and `modules` (networks, then optimisers, by name).
    """
    return runtime.load_checkpoint(path, CHECKPOINT_KIND, CHECKPOINT_FORMAT)


class ConvLayer(nn.Module):
    """Reflect padding, then a spectrally normalised convolution."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int):
        super().__init__()
        self.pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv = nn.utils.spectral_norm(nn.Conv2d(in_channels, out_channels, kernel_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pad(x))


class ResidualDown(nn.Module):
    """relu-conv-relu-conv-avgpool beside a 1x1 conv-avgpool shortcut: half the resolution."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = ConvLayer(in_channels, out_channels, 3)
        self.conv2 = ConvLayer(out_channels, out_channels, 3)
        self.shortcut = ConvLayer(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.relu(self.conv1(F.relu(x))))
        return F.avg_pool2d(out, 2) + F.avg_pool2d(self.shortcut(x), 2)


class ResidualUp(nn.Module):
    """norm-relu-upsample-conv-norm-relu-conv beside an upsample-1x1 conv shortcut: twice the resolution."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm1 = nn.InstanceNorm2d(in_channels, affine=True)
        self.conv1 = ConvLayer(in_channels, out_channels, 3)
        self.norm2 = nn.InstanceNorm2d(out_channels, affine=True)
        self.conv2 = ConvLayer(out_channels, out_channels, 3)
        self.shortcut = ConvLayer(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.interpolate(F.relu(self.norm1(x)), scale_factor=2, mode="nearest")
        out = self.conv2(F.relu(self.norm2(self.conv1(out))))
        return out + self.shortcut(F.interpolate(x, scale_factor=2, mode="nearest"))


class Residual(nn.Module):
    """conv-norm-relu-conv-norm plus identity, same resolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, 3)
        self.norm1 = nn.InstanceNorm2d(channels, affine=True)
        self.conv2 = ConvLayer(channels, channels, 3)
        self.norm2 = nn.InstanceNorm2d(channels, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.norm2(self.conv2(F.relu(self.norm1(self.conv1(x)))))


def _normed(block: nn.Module, channels: int) -> nn.Sequential:
    return nn.Sequential(block, nn.InstanceNorm2d(channels, affine=True))


class Generator(nn.Module):
    """(landmark image, masked face) -> face, conditioned on a one-hot target identity.

    Input: (B, 6, S, S) in [0, 1]: the 3-channel landmark drawing, then the face with the mask
    region zeroed. Output: (B, 3, S, S), unbounded (the authors clamp to [0, 1] at test time).
    Submodules are registered in the authors' order, so their state dict maps onto this one
    position by position (`baselines.ciagan.released`).
    """

    def __init__(self, config: CiaganModelConfig):
        super().__init__()
        self.config = config
        width = config.generator_width
        # Encoder widths w, 2w, 4w, 8w, 8w, ... capped at 8w; the decoder mirrors them, ending at w / 2.
        widths = [width * 2 ** min(level, 3) for level in range(config.depth)]
        bottleneck = widths[-1]
        self.encoder = nn.Sequential(*(_normed(ResidualDown(c_in, c_out), c_out)
                                       for c_in, c_out in zip([6, *widths[:-1]], widths, strict=True)))
        self.fuse = _normed(ConvLayer(2 * bottleneck, bottleneck, 3), bottleneck)
        self.middle = nn.Sequential(*(Residual(bottleneck) for _ in range(4)))
        up_widths = [*widths[-2::-1], width // 2]
        self.decoder = nn.Sequential(*(_normed(ResidualUp(c_in, c_out), c_out)
                                       for c_in, c_out in zip([bottleneck, *up_widths[:-1]], up_widths, strict=True)))
        self.to_rgb = nn.Conv2d(width // 2, 3, 3, padding=1)

        # Identity branch: one-hot -> MLP -> (C, 4, 4) map -> three convolutions to the bottleneck width.
        mlp = config.identity_width
        sizes = [config.identities, mlp, mlp, mlp, mlp, 2 * mlp, 2 * mlp, 2 * mlp]
        self.identity_mlp = nn.Sequential(*(layer for n_in, n_out in zip(sizes, sizes[1:], strict=False)
                                            for layer in (nn.Linear(n_in, n_out), nn.LeakyReLU(0.2))))
        self.identity_map_channels = 2 * mlp // 16
        c = self.identity_map_channels
        self.identity_convs = nn.Sequential(*(layer for c_in, c_out in ((c, 2 * c), (2 * c, 4 * c), (4 * c, bottleneck))
                                              for layer in (ConvLayer(c_in, c_out, 3), nn.LeakyReLU(0.2),
                                                            nn.InstanceNorm2d(c_out, affine=True))))
        self.apply(_xavier_init)

    def forward(self, x: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        """x: (B, 6, S, S); identity: (B, identities) one-hot (float)."""
        features = self.encoder(x)
        code = self.identity_mlp(identity).view(-1, self.identity_map_channels, 4, 4)
        features = self.fuse(torch.cat([features, self.identity_convs(code)], dim=1))
        return self.to_rgb(self.decoder(self.middle(features)))


class Discriminator(nn.Module):
    """Scores (image, landmark drawing) pairs: (B, 6, S, S) -> (B, 1)."""

    def __init__(self, config: CiaganModelConfig):
        super().__init__()
        width = config.discriminator_width
        widths = [width * 2 ** min(level, 3) for level in range(config.depth)]
        self.blocks = nn.Sequential(*(ResidualDown(c_in, c_out) for c_in, c_out in zip([6, *widths[:-1]], widths,
                                                                                        strict=True)))
        self.hidden = nn.Linear(widths[-1] * 16, 16 * width)
        self.score = nn.Linear(16 * width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = F.leaky_relu(self.hidden(self.blocks(x).flatten(1)), 0.2)
        # The authors end with a leaky ReLU too, so negative scores are damped by 0.2.
        return F.leaky_relu(self.score(hidden), 0.2)


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + self.shortcut(x))


class Siamese(nn.Module):
    """Identity embedding of a face image: (B, 3, S, S) -> (B, embedding_dim)."""

    def __init__(self, config: CiaganModelConfig):
        super().__init__()
        width = config.siamese_width
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        stages, channels = [], width
        for stage, stride in enumerate((1, 2, 2, 2)):
            out_channels = width * 2 ** stage
            stages += [BasicBlock(channels, out_channels, stride), BasicBlock(out_channels, out_channels, 1)]
            channels = out_channels
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.Linear(channels, 2 * channels), nn.ReLU(), nn.Linear(2 * channels,
                                                                                          config.embedding_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)).mean(dim=(2, 3)))


def contrastive_loss(first: torch.Tensor, second: torch.Tensor, same: torch.Tensor, margin: float) -> torch.Tensor:
    """Hadsell et al.: 0.5 * d^2 for same-identity pairs, 0.5 * max(0, margin - d)^2 otherwise."""
    squared = (first - second).pow(2).sum(dim=1)
    apart = F.relu(margin - (squared + 1e-9).sqrt()).pow(2)
    return (0.5 * torch.where(same, squared, apart)).mean()


def _xavier_init(module: nn.Module) -> None:
    # The authors' generator initialisation, spectrally normalised convolutions included.
    if isinstance(module, nn.Conv2d):
        nn.init.xavier_normal_(getattr(module, "weight_orig", module.weight))
        nn.init.constant_(module.bias, 0.01)
