"""The canonical face frame: one crop geometry for every input, the transform back, and the face mask.

Frame (CIAGAN's eye-centred crop, see docs/decisions.md): centre = midpoint of the inner
eye corners (landmarks 39 and 42); box height = 2 * eye_scale * |p42 - p39|; box width =
height * crop_width / crop_height, so pixels stay square; no rotation, so head roll is kept;
regions outside the photo are edge-padded.

The crop transform maps continuous image coordinates (pixel i spans [i, i+1)) to crop
coordinates: u = scale * (x - x0). Pixel-centre landmark coordinates therefore map as
u = scale * (x + 0.5 - x0) - 0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from facedata.landmarks import LEFT_EYE_INNER, RIGHT_EYE_INNER


@dataclass(frozen=True)
class CropTransform:
    """Axis-aligned similarity from image to crop coordinates."""

    x0: float
    y0: float
    scale: float  # crop pixels per image pixel

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        """Pixel-centre image coordinates -> pixel-centre crop coordinates."""
        return ((points + 0.5 - (self.x0, self.y0)) * self.scale - 0.5).astype(np.float32)

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """Pixel-centre crop coordinates -> pixel-centre image coordinates."""
        return ((points + 0.5) / self.scale + (self.x0, self.y0) - 0.5).astype(np.float32)

    def rescaled(self, factor: float) -> CropTransform:
        """The same crop expressed for an image resized by `factor` (new pixels per old pixel)."""
        return CropTransform(self.x0 * factor, self.y0 * factor, self.scale / factor)

    def as_list(self) -> list[float]:
        return [self.x0, self.y0, self.scale]

    @classmethod
    def from_list(cls, values) -> CropTransform:
        x0, y0, scale = (float(v) for v in values)
        return cls(x0, y0, scale)


def frame_for(landmarks: np.ndarray, crop_size: tuple[int, int], eye_scale: float) -> CropTransform:
    """Canonical frame of a face given its 68 landmarks (pixel-centre image coordinates).

    crop_size is (height, width). Raises ValueError for a degenerate face (eye corners coincide).
    """
    height, width = crop_size
    inner_left, inner_right = (
        landmarks[LEFT_EYE_INNER].astype(np.float64),
        landmarks[RIGHT_EYE_INNER].astype(np.float64),
    )
    eye_distance = float(np.hypot(*(inner_right - inner_left)))
    if eye_distance < 1.0:
        raise ValueError(f"inner eye corners {eye_distance:.2f} px apart: degenerate landmarks")
    box_height = 2.0 * eye_scale * eye_distance
    box_width = box_height * width / height
    centre = (inner_left + inner_right) / 2 + 0.5  # continuous coordinates
    return CropTransform(centre[0] - box_width / 2, centre[1] - box_height / 2, height / box_height)


def extract_crop(rgb: np.ndarray, transform: CropTransform, crop_size: tuple[int, int]) -> np.ndarray:
    """Resample the frame out of `rgb` (edge padding outside the photo), uint8 (height, width, 3)."""
    height, width = crop_size
    box = (transform.x0, transform.y0, transform.x0 + width / transform.scale, transform.y0 + height / transform.scale)
    # Cut the region (plus a resampling margin) first, so padding never touches the whole photo.
    margin = 2 + int(np.ceil(1.0 / transform.scale))
    left, top = int(np.floor(box[0])) - margin, int(np.floor(box[1])) - margin
    right, bottom = int(np.ceil(box[2])) + margin, int(np.ceil(box[3])) + margin
    rows, cols = rgb.shape[:2]
    region = rgb[max(top, 0) : min(bottom, rows), max(left, 0) : min(right, cols)]
    if region.size == 0:
        raise ValueError("the face frame lies entirely outside the image")
    pad = ((max(0, -top), max(0, bottom - rows)), (max(0, -left), max(0, right - cols)), (0, 0))
    region = np.pad(region, pad, mode="edge")
    resized = Image.fromarray(region).resize(
        (width, height), Image.Resampling.BICUBIC, box=(box[0] - left, box[1] - top, box[2] - left, box[3] - top)
    )
    return np.asarray(resized)


def face_polygon(landmarks: np.ndarray) -> np.ndarray:
    """The mask outline: (x0, y19), jaw 0..16, (x16, y24): the jaw closed at eyebrow height."""
    jaw = landmarks[0:17]
    return np.concatenate([[[landmarks[0, 0], landmarks[19, 1]]], jaw, [[landmarks[16, 0], landmarks[24, 1]]]])


def face_mask(landmarks: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Filled face polygon as a bool array of the given (height, width); True inside the face."""
    height, width = size
    canvas = Image.new("L", (width, height), 0)
    ImageDraw.Draw(canvas).polygon([tuple(map(float, p)) for p in face_polygon(landmarks)], fill=255)
    return np.asarray(canvas) > 0
