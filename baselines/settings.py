"""Settings of the classic baselines and of the folder method (params `anonymisers.<name>`); no torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from infra.settings import above, at_least, odd

Grid = Literal["crop", "mask_box"]
CellColour = Literal["linear", "mean", "nearest"]


@dataclass(frozen=True)
class BlurConfig:
    kernel_size: Annotated[int, odd, at_least(1)] = 101  # paper: 101 x 101 Gaussian kernel over the face mask
    sigma: Annotated[float, above(0)] | None = None  # None: OpenCV's rule 0.3 * ((k - 1) / 2 - 1) + 0.8


@dataclass(frozen=True)
class PixelateConfig:
    cells: Annotated[int, at_least(1)] = 10  # paper "10 x 10": a cells x cells grid
    # crop: the grid spans the whole crop (cells 22 x 18 px; reproduces the paper's detection rates) | mask_box:
    # it spans the face mask's bounding box (cells ~10 px; MTCNN still finds 94-98 % of the faces)
    grid: Grid = "crop"
    # linear: bilinear sample at the cell centre (cv2.resize's default) | mean: mean of the cell | nearest: centre pixel
    colour: CellColour = "linear"


@dataclass(frozen=True)
class FolderConfig:
    root: str | None = None  # third-party anonymised crops: <root>/<dataset>/<pair_id>.png
