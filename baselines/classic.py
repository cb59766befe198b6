"""The classic obfuscation baselines: Gaussian blurring and pixelation of the face region.

Both change only the pixels inside the face mask; every other pixel is the source's, bit for bit.
Definitions (docs/decisions.md, "Baselines"):

- Blurring: the whole crop is convolved with a separable, normalised k x k Gaussian kernel
  (k = 101 in the paper), borders reflected without repeating the edge pixel (OpenCV's default
  BORDER_REFLECT_101); the result replaces the pixels inside the mask. The paper gives no sigma;
  the default is OpenCV's rule for a kernel size, 0.3 * ((k - 1) / 2 - 1) + 0.8 (15.5 for k = 101),
  i.e. what cv2.GaussianBlur(image, (k, k), 0) does.
- Pixelation: a cells x cells grid (10 x 10 in the paper) over the whole crop (`grid: crop`) or over
  the face mask's bounding box (`mask_box`); the mask's pixels take their cell's colour. Row r of
  the extent [top, bottom) belongs to cell floor((r - top) * cells / (bottom - top)), likewise for
  columns, so cells differ in size by at most one pixel. Cell colour (`colour`): `linear`, the
  bilinear sample at the cell's centre, what "resize to 10 x 10 and back" with cv2.resize's default
  does (on the 220x180 crop: the mean of the cell's central 2 x 2 pixels); `mean`, the mean of the
  cell's pixels (an area-averaging mosaic); `nearest`, the pixel at the cell's centre. The default
  (whole crop, linear) is the reading whose detection rates match the paper's (docs/decisions.md).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from baselines.interface import Anonymiser, FaceBatch, RunContext
from baselines.settings import BlurConfig, CellColour, Grid, PixelateConfig


def opencv_sigma(kernel_size: int) -> float:
    """The sigma OpenCV derives for a Gaussian kernel of this size when none is given."""
    return 0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8


def gaussian_kernel(kernel_size: int, sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian weights, float64, centred on the middle tap."""
    offsets = np.arange(kernel_size) - (kernel_size - 1) / 2
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    return weights / weights.sum()


@functools.lru_cache(maxsize=8)
def blur_matrix(length: int, kernel_size: int, sigma: float) -> torch.Tensor:
    """(length, length) float32 operator of the 1-D blur along one axis, reflect-101 borders folded in.

    Row i holds the kernel taps at positions i - r .. i + r, each added to the column it reflects to.
    Applying it as a matrix product lets BLAS do the work: ~3x faster than a 101-tap convolution.
    """
    radius = kernel_size // 2
    if radius >= length:
        raise ValueError(f"blur kernel {kernel_size} needs image sides larger than {radius}, got {length}")
    positions = np.abs(np.arange(length)[:, None] + np.arange(-radius, radius + 1)[None, :])
    positions = np.where(positions >= length, 2 * length - 2 - positions, positions)
    operator = np.zeros((length, length))
    rows = np.repeat(np.arange(length), kernel_size)
    np.add.at(operator, (rows, positions.ravel()), np.tile(gaussian_kernel(kernel_size, sigma), length))
    return torch.from_numpy(operator).float()


def blur_inside(images: np.ndarray, masks: np.ndarray, kernel_size: int, sigma: float) -> np.ndarray:
    """(N, H, W, 3) uint8 with the pixels inside `masks` replaced by the Gaussian-blurred crop."""
    height, width = masks.shape[1:]
    channels = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    blurred = blur_matrix(height, kernel_size, sigma) @ channels @ blur_matrix(width, kernel_size, sigma).T
    blurred = blurred.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return np.where(masks[..., None], blurred, images)


def pixelate_inside(images: np.ndarray, masks: np.ndarray, cells: int, grid: Grid = "crop",
                    colour: CellColour = "linear") -> np.ndarray:
    """(N, H, W, 3) uint8 with a cells x cells mosaic of the crop (or of each mask's box) inside the mask."""
    n, height, width = masks.shape
    if grid == "mask_box":
        (top, bottom), (left, right) = _extent(masks.any(axis=2)), _extent(masks.any(axis=1))
    else:
        top, bottom, left, right = np.zeros(n, int), np.full(n, height), np.zeros(n, int), np.full(n, width)
    row_cell, in_rows = _cell_of(np.arange(height), top, bottom, cells)
    col_cell, in_cols = _cell_of(np.arange(width), left, right, cells)
    labels = (np.arange(n)[:, None, None] * cells + row_cell[:, :, None]) * cells + col_cell[:, None, :]
    if colour == "mean":
        in_box = in_rows[:, :, None] & in_cols[:, None, :]
        box_labels, box_pixels = labels[in_box], images[in_box].astype(np.float64)
        counts = np.bincount(box_labels, minlength=n * cells * cells)
        sums = np.stack([np.bincount(box_labels, box_pixels[:, c], minlength=counts.size) for c in range(3)], 1)
        colours = sums / np.maximum(counts, 1)[:, None]
    else:
        rows, cols = (_sample_points(start, stop, cells, length, colour)
                      for start, stop, length in ((top, bottom, height), (left, right, width)))
        colours = _bilinear(images, rows, cols).reshape(-1, 3)
    out = images.copy()
    out[masks] = np.rint(colours).astype(np.uint8)[labels[masks]]
    return out


def _sample_points(start: np.ndarray, stop: np.ndarray, cells: int, length: int, colour: str):
    """Per image and cell, the two pixel indices to interpolate between and the second one's weight.

    The sample is the cell's centre in continuous coordinates (pixel i spans [i, i + 1)):
    bilinear between the two nearest pixel centres (`linear`), or the pixel containing it (`nearest`).
    """
    centres = start[:, None] + (np.arange(cells) + 0.5) * ((stop - start) / cells)[:, None]
    if colour == "nearest":
        index = np.clip(np.floor(centres), 0, length - 1).astype(int)
        return index, index, np.zeros_like(centres)
    position = centres - 0.5
    low = np.floor(position)
    return (np.clip(low, 0, length - 1).astype(int), np.clip(low + 1, 0, length - 1).astype(int),
            position - low)


def _bilinear(images: np.ndarray, rows, cols) -> np.ndarray:
    """(N, cells, cells, 3) float64 samples of each image at the grid's points."""
    (r0, r1, wr), (c0, c1, wc) = rows, cols
    batch = np.arange(len(images))[:, None, None]
    pixels = images.astype(np.float64)

    def at(r, c):
        return pixels[batch, r[:, :, None], c[:, None, :]]

    wr, wc = wr[:, :, None, None], wc[:, None, :, None]
    return (at(r0, c0) * (1 - wc) + at(r0, c1) * wc) * (1 - wr) + (at(r1, c0) * (1 - wc) + at(r1, c1) * wc) * wr


def _extent(occupied: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and one-past-last occupied index per row of a (N, L) bool array (0, L when empty)."""
    length = occupied.shape[1]
    first = occupied.argmax(axis=1)
    last = length - occupied[:, ::-1].argmax(axis=1)
    empty = ~occupied.any(axis=1)
    return np.where(empty, 0, first), np.where(empty, length, last)


def _cell_of(positions: np.ndarray, start: np.ndarray, stop: np.ndarray, cells: int):
    """Cell index (N, L) of each position within [start, stop) split into `cells`, and the in-range mask."""
    relative = positions[None, :] - start[:, None]
    cell = np.clip(relative * cells // np.maximum(stop - start, 1)[:, None], 0, cells - 1)
    return cell, (relative >= 0) & (positions[None, :] < stop[:, None])


class Blur(Anonymiser):
    """Gaussian blur of the face region (paper: 101 x 101 kernel)."""

    any_frame = True

    def __init__(self, config: BlurConfig = BlurConfig()):
        self.kernel_size = config.kernel_size
        self.sigma = opencv_sigma(config.kernel_size) if config.sigma is None else config.sigma

    @classmethod
    def from_config(cls, settings: BlurConfig, context: RunContext) -> Blur:
        return cls(settings)

    def anonymise(self, batch: FaceBatch) -> np.ndarray:
        return blur_inside(batch.source, batch.source_mask, self.kernel_size, self.sigma)


class Pixelate(Anonymiser):
    """Mosaic of the face region (paper: 10 x 10)."""

    any_frame = True

    def __init__(self, config: PixelateConfig = PixelateConfig()):
        self.cells, self.grid, self.colour = config.cells, config.grid, config.colour

    @classmethod
    def from_config(cls, settings: PixelateConfig, context: RunContext) -> Pixelate:
        return cls(settings)

    def anonymise(self, batch: FaceBatch) -> np.ndarray:
        return pixelate_inside(batch.source, batch.source_mask, self.cells, self.grid, self.colour)
