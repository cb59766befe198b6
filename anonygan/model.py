"""AnonyGAN (Dall'Asen et al., ICIAP 2021): generator, discriminators, output blend.

Read next to the paper (section 3) and SPEC sections 2-3. Shapes are given for the
default 220x180 crop and 64 base channels: the encoders bring images to 256 x 55 x 45,
the graph blocks work at that size, the decoders bring it back.

    maps    = LandmarkAttention(cat(Lm_c, Lm_s))            eq. (1), optional
    F^i_0   = AppearanceEncoder(cat(I_c, I_sc))             I_sc = I_s * (1 - mask)
    F^lm_0  = ShapeEncoder(maps)
    F^i_k, F^lm_k = GraphBlock_k(F^i_k-1, F^lm_k-1)         k = 1..K
    I_g     = blend(ImageDecoder(F^i_K), AttentionDecoder(F^i_K))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import runtime
from anonygan.config import ModelConfig

CHECKPOINT_KIND, CHECKPOINT_FORMAT = "anonygan", 3

class LandmarkAttention(nn.Module):
    """Eq. (1), Efficient Channel Attention: w = sigmoid(Conv1D_J(GAP(maps))), maps * w.

    On one-hot landmark maps GAP is ~1/(H*W) per channel, so w starts near sigmoid(0) = 0.5. It always
    runs in fp32: in bf16, sigmoid of anything below ~4e-3 rounds to exactly 0.5, which under bf16
    autocast would make the attention a constant x0.5.
    """

    def __init__(self, kernel_size: int):
        super().__init__()
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, maps: Tensor) -> Tensor:
        with torch.autocast(maps.device.type, enabled=False):
            maps = maps.float()
            pooled = maps.mean(dim=(2, 3)).unsqueeze(1)  # (N, 1, C): channels form the 1-D signal
            weights = torch.sigmoid(self.conv(pooled)).squeeze(1)
            return maps * weights[:, :, None, None]


class Encoder(nn.Sequential):
    """c7s1-b, d2b, d4b (pix2pix notation): full resolution to a quarter, no conv bias."""

    def __init__(self, in_channels: int, base: int):
        super().__init__(
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, base, 7, bias=False), nn.BatchNorm2d(base), nn.ReLU(True),
            nn.Conv2d(base, 2 * base, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * base), nn.ReLU(True),
            nn.Conv2d(2 * base, 4 * base, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(4 * base), nn.ReLU(True),
        )


def conv_path(in_channels: int, out_channels: int, dropout: float, final_norm: bool) -> nn.Sequential:
    """Two reflect-padded 3x3 convs; the first keeps the input width (the authors' code)."""
    layers = [
        nn.ReflectionPad2d(1), nn.Conv2d(in_channels, in_channels, 3, bias=False),
        nn.BatchNorm2d(in_channels), nn.ReLU(True), nn.Dropout(dropout),
        nn.ReflectionPad2d(1), nn.Conv2d(in_channels, out_channels, 3, bias=False),
    ]
    if final_norm:
        layers.append(nn.BatchNorm2d(out_channels))
    return nn.Sequential(*layers)


class GraphConvolution(nn.Module):
    """GloRe's GCN on a graph of V nodes with S-dim states: mix nodes (plus identity), then states."""

    def __init__(self, states: int, nodes: int):
        super().__init__()
        self.node_mixing = nn.Conv1d(nodes, nodes, 1)
        self.state_update = nn.Conv1d(states, states, 1, bias=False)

    def forward(self, graph: Tensor) -> Tensor:  # (N, S, V)
        mixed = self.node_mixing(graph.transpose(1, 2)).transpose(1, 2) + graph
        return self.state_update(F.relu(mixed))


class BipartiteGraphUnit(nn.Module):
    """Landmark-to-landmark reasoning on a bipartite graph (BiGraphGAN, GloRe-style).

    The shape code is split into two halves A and B. Each half's node states are projected
    onto graph nodes with the *other* half's projection map, reasoned on by a GCN of its own,
    and reprojected with the same map: the crossing that links the two sides of the graph.
    """

    def __init__(self, channels: int):
        super().__init__()
        states, nodes = channels, channels // 2
        self.to_states = nn.Conv2d(channels, states, 1)
        self.to_projection = nn.Conv2d(channels, nodes, 1)
        self.gcn_a = GraphConvolution(states, nodes)
        self.gcn_b = GraphConvolution(states, nodes)
        self.extend = nn.Conv2d(states, channels, 1, bias=False)
        self.norm = nn.BatchNorm2d(channels, eps=1e-4)

    def reason(self, half: Tensor, projection: Tensor, gcn: GraphConvolution) -> Tensor:
        """Pixels -> nodes with `projection` (N, V, HW), GCN, nodes -> pixels with the same map."""
        n, _, h, w = half.shape
        states = self.to_states(half).flatten(2)  # (N, S, HW)
        nodes = states @ projection.transpose(1, 2)  # (N, S, V)
        pixels = gcn(nodes) @ projection  # (N, S, HW)
        return self.norm(self.extend(pixels.view(n, -1, h, w)))

    def forward(self, shape: Tensor) -> Tensor:
        a, b = shape.chunk(2, dim=1)
        projection_a, projection_b = self.to_projection(a).flatten(2), self.to_projection(b).flatten(2)
        a = a + self.reason(a, projection_b, self.gcn_a)
        b = b + self.reason(b, projection_a, self.gcn_b)
        return torch.cat([a, b], dim=1)


class GraphBlock(nn.Module):
    """One iteration of landmark reasoning and Landmark Appearance Aggregation.

        F^lm <- Graph(ShapePath(F^lm_in))
        F^i  <- F^i + AppearancePath(F^i) * sigmoid(F^lm)
        next shape input = cat(F^lm, F^i)
    """

    def __init__(self, channels: int, shape_in: int, dropout: float):
        super().__init__()
        self.appearance_path = conv_path(channels, channels, dropout, final_norm=True)
        self.shape_path = conv_path(shape_in, channels, dropout, final_norm=False)
        self.graph = BipartiteGraphUnit(channels // 2)

    def forward(self, appearance: Tensor, shape: Tensor) -> tuple[Tensor, Tensor]:
        shape = self.graph(self.shape_path(shape))
        appearance = appearance + self.appearance_path(appearance) * torch.sigmoid(shape)
        return appearance, torch.cat([shape, appearance], dim=1)


def upsample(in_channels: int, out_channels: int) -> nn.ConvTranspose2d:
    """3x3 transposed conv, stride 2: exactly doubles height and width."""
    return nn.ConvTranspose2d(in_channels, out_channels, 3, stride=2, padding=1, output_padding=1,
                              bias=False)


class ImageDecoder(nn.Sequential):
    """F^i_K -> the intermediate image ~I_g in [-1, 1]."""

    def __init__(self, base: int):
        super().__init__(
            upsample(4 * base, 2 * base), nn.BatchNorm2d(2 * base), nn.ReLU(True),
            upsample(2 * base, base), nn.BatchNorm2d(base), nn.ReLU(True),
            nn.ReflectionPad2d(3), nn.Conv2d(base, 3, 7), nn.Tanh(),
        )


class AttentionDecoder(nn.Sequential):
    """F^i_K -> the one-channel attention mask A in (0, 1). Linear until the sigmoid, as the authors'.

    The last layer is a 1x1 map from `base` channels to 1, as a transposed convolution (the authors') or a
    convolution: the same function, but PyTorch initialises the first with U(-1, 1) and the second with
    U(-1/sqrt(base), 1/sqrt(base)), and their weights are [base, 1, 1, 1] and [1, base, 1, 1].
    """

    def __init__(self, base: int, output_layer: str = "conv_transpose"):
        last = {"conv_transpose": nn.ConvTranspose2d, "conv": nn.Conv2d}[output_layer]
        super().__init__(
            upsample(4 * base, 2 * base), upsample(2 * base, base),
            last(base, 1, 1, bias=False), nn.Sigmoid(),
        )


def composite(face: Tensor, source: Tensor, mask: Tensor) -> Tensor:
    """`face` inside the mask (N, 1, H, W in {0, 1}), `source` outside."""
    return source * (1 - mask) + face * mask


class Generator(nn.Module):
    """Landmark2Landmark face generator (section 3.2) with the Landmark Attention Model (3.1)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        base, landmark_channels = config.base_channels, 2 * config.landmarks
        self.landmark_attention = (LandmarkAttention(config.attention_kernel)
                                   if config.landmark_attention else nn.Identity())
        self.appearance_encoder = Encoder(6, base)
        self.shape_encoder = Encoder(landmark_channels, base)
        width = 4 * base
        self.blocks = nn.ModuleList(
            GraphBlock(width, width if k == 0 else 2 * width, config.dropout)
            for k in range(config.graph_blocks)
        )
        self.image_decoder = ImageDecoder(base)
        self.attention_decoder = AttentionDecoder(base, config.attention_output)

    def forward(self, condition: Tensor, context: Tensor, condition_maps: Tensor,
                source_maps: Tensor) -> Tensor:
        """I_g in [-1, 1] from I_c, I_sc (N, 3, H, W) and the landmark maps Lm_c, Lm_s (N, L, H, W)."""
        maps = self.landmark_attention(torch.cat([condition_maps, source_maps], dim=1))
        appearance = self.appearance_encoder(torch.cat([condition, context], dim=1))
        shape = self.shape_encoder(maps)
        for block in self.blocks:
            appearance, shape = block(appearance, shape)
        generated, attention = self.image_decoder(appearance), self.attention_decoder(appearance)
        if self.config.output_blend == "context":
            image = generated * attention + context * (1 - attention)
        else:
            image = condition * attention + generated * (1 - attention)
        return image.clamp(-1, 1)


class PatchDiscriminator(nn.Module):
    """70x70 PatchGAN on cat(image, condition): C64-C128-C256-C512 (stride 2), C512, C1 (stride 1).

    Returns the five intermediate feature maps (for weak feature matching) and the logits last.
    """

    def __init__(self, in_channels: int, base: int = 64):
        super().__init__()
        widths = [base, 2 * base, 4 * base, 8 * base, 8 * base]
        strides = [2, 2, 2, 2, 1]
        layers, previous = [], in_channels
        for index, (width, stride) in enumerate(zip(widths, strides, strict=True)):
            norm = nn.Identity() if index == 0 else nn.BatchNorm2d(width)
            layers.append(nn.Sequential(nn.Conv2d(previous, width, 4, stride, padding=1), norm,
                                        nn.LeakyReLU(0.2, True)))
            previous = width
        self.features = nn.ModuleList(layers)
        self.logits = nn.Conv2d(previous, 1, 4, 1, padding=1)

    def forward(self, image: Tensor, condition: Tensor) -> list[Tensor]:
        x, outputs = torch.cat([image, condition], dim=1), []
        for layer in self.features:
            x = layer(x)
            outputs.append(x)
        outputs.append(self.logits(x))
        return outputs


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by `anonygan.training.Trainer`, on CPU; a DataError naming the file otherwise.

    It holds `model_config` (this module's ModelConfig as a dict) and `modules` (the networks'
    state dicts by name: generator, d_app, d_lm, then the optimisers).
    """
    return runtime.load_checkpoint(path, CHECKPOINT_KIND, CHECKPOINT_FORMAT)


def build(config: ModelConfig) -> tuple[Generator, PatchDiscriminator, PatchDiscriminator]:
    """G, D_app (sees the image with I_c: 6 channels) and D_lm (the image with Lm_s)."""
    d_app = PatchDiscriminator(3 + 3, config.discriminator_channels)
    d_lm = PatchDiscriminator(3 + config.landmarks, config.discriminator_channels)
    return Generator(config), d_app, d_lm
