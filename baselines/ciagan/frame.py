"""CIAGAN's square network frame, derived from the canonical 220x180 crop, and the way back.

The authors cut the same eye-centred frame (at 218x178), drew the landmark lines and the mask
at that size, squashed the images to 144 x 144 (1.125 x 128) and cut the central 128 x 128 at
test time; in training they cut a random box of 50-75 % of the side around the centre instead
and scaled it to 128 (their only augmentation). Here, likewise:

    crop (H, W) --resize (non-uniform)--> S' x S', S' = round(frame_scale * S) --centre cut--> S x S

with antialiased bicubic resampling. Back: the generator's S x S output replaces the centre of
the source's S' x S' frame, the frame is resized to H x W and composited into the source crop
with the full-resolution face mask, so pixels outside the mask are the source's exactly.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

#: The 29-landmark drawing: (first, last, closed) index runs of the iBUG 68 points.
LANDMARK_LINES = ((0, 16, False), (27, 30, False), (60, 67, True))
#: The authors draw blue 1-pixel lines on white.
LINE_COLOUR, BACKGROUND = (0, 0, 255), (255, 255, 255)
#: The authors' loader counts a resampled mask pixel as face above this value.
MASK_THRESHOLD = 0.2


def landmark_image(landmarks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 drawing of CIAGAN's 29 landmarks as 1-pixel polylines (jaw, nose, closed lips)."""
    height, width = size
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    pixels = np.rint(landmarks).astype(int)
    for first, last, closed in LANDMARK_LINES:
        run = [tuple(point) for point in pixels[first:last + 1]]
        draw.line(run + run[:1] if closed else run, fill=LINE_COLOUR, width=1)
    return np.asarray(canvas)


def network_inputs(faces: np.ndarray, masks: np.ndarray, landmarks: np.ndarray) -> torch.Tensor:
    """(N, 7, H, W) uint8 crop-sized planes: face RGB, landmark drawing RGB, mask (0 / 255)."""
    height, width = masks.shape[1:]
    drawings = np.stack([landmark_image(points, (height, width)) for points in landmarks])
    planes = np.concatenate([faces, drawings, masks[..., None].astype(np.uint8) * 255], axis=3)
    return torch.from_numpy(planes).permute(0, 3, 1, 2)


def frame_size(image_size: int, frame_scale: float) -> int:
    """Side S' of the squashed frame the network's S x S input is cut from."""
    size = round(frame_scale * image_size)
    if size < image_size:
        raise ValueError(f"CIAGAN frame_scale must be >= 1, got {frame_scale}")
    return size


def to_network(planes: torch.Tensor, image_size: int, frame_scale: float, boxes: torch.Tensor | None = None,
               memory_format: torch.memory_format = torch.contiguous_format,
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Face, landmark drawing (both (N, 3, S, S) in [0, 1]) and mask ((N, 1, S, S) float 0/1).

    `planes` are `network_inputs` (on any device). `boxes` (N, 4), if given, are training crops
    (left, top, right, bottom) as fractions of the squashed frame; otherwise the centre S x S.
    The outputs are dense in `memory_format` (channels-last on CUDA).
    """
    side = frame_size(image_size, frame_scale)
    frame = F.interpolate(planes.float() / 255, size=(side, side), mode="bicubic", antialias=True,
                          align_corners=False).clamp_(0, 1)
    if boxes is None:
        start = (side - image_size) // 2
        cut = frame[:, :, start:start + image_size, start:start + image_size]
    else:
        # Affine map from output pixel centres to the box, in grid_sample's [-1, 1] coordinates.
        scale = torch.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], dim=1)
        shift = torch.stack([boxes[:, 0] + boxes[:, 2], boxes[:, 1] + boxes[:, 3]], dim=1) - 1
        theta = torch.zeros(len(boxes), 2, 3, device=planes.device)
        theta[:, 0, 0], theta[:, 1, 1], theta[:, :, 2] = scale[:, 0], scale[:, 1], shift
        grid = F.affine_grid(theta, [len(boxes), 7, image_size, image_size], align_corners=False)
        cut = F.grid_sample(frame, grid, mode="bilinear", padding_mode="border", align_corners=False)
    # Dense copies: torch 2.13's CPU convolution backward crashes on channel slices of channels-last tensors.
    face, drawing = (part.contiguous(memory_format=memory_format) for part in (cut[:, :3], cut[:, 3:6]))
    return face, drawing, (cut[:, 6:] > MASK_THRESHOLD).float().contiguous(memory_format=memory_format)


def random_boxes(n: int, crop_range: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    """(n, 4) training boxes: each side lies half of a uniform draw from `crop_range` off the centre."""
    low, high = crop_range
    extents = (low + (high - low) * torch.rand(n, 4, generator=generator)) / 2
    return torch.stack([0.5 - extents[:, 0], 0.5 - extents[:, 1], 0.5 + extents[:, 2], 0.5 + extents[:, 3]], 1)


def to_crop(generated: torch.Tensor, planes: torch.Tensor, frame_scale: float) -> np.ndarray:
    """Composite the generator's (N, 3, S, S) output into the source crops of `planes`.

    Returns (N, H, W, 3) uint8: generated face inside the crop's mask, source pixels elsewhere.
    """
    image_size = generated.shape[-1]
    side = frame_size(image_size, frame_scale)
    height, width = planes.shape[-2:]
    source = planes[:, :3]
    frame = F.interpolate(source.float() / 255, size=(side, side), mode="bicubic", antialias=True,
                          align_corners=False)
    start = (side - image_size) // 2
    frame[:, :, start:start + image_size, start:start + image_size] = generated.float().clamp(0, 1)
    back = F.interpolate(frame, size=(height, width), mode="bicubic", align_corners=False)
    back = (back.clamp_(0, 1) * 255).round_().to(torch.uint8)
    inside = planes[:, 6:] > 127
    return torch.where(inside, back, source).permute(0, 2, 3, 1).cpu().numpy()
