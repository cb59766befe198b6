"""One photo in, one prepared face out: detection, landmarks, canonical crop and mask.

Large photos are detected at reduced size and the landmarks are refined at a resolution
that still covers the crop, so a 5000-px photo costs about as much as a small one.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from facedata.framing import CropTransform, extract_crop, face_mask, frame_for
from facedata.images import ImageError, decode
from facedata.landmarks import LandmarkDetector

#: Bump when the processing changes in a way that changes outputs for the same config.
PREPARE_VERSION = 2


@dataclass(frozen=True)
class PrepareConfig:
    crop_height: int = 220
    crop_width: int = 180
    eye_scale: float = 5.0
    detect_max_side: int = 500
    detect_upsample: int = 1
    fallback_detector: str | None = "cnn"
    max_pixels: int = 250_000_000

    def __post_init__(self):
        for name in ("crop_height", "crop_width", "detect_max_side", "max_pixels"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 16:
                raise ValueError(f"prepare.{name} must be an integer >= 16, got {value!r}")
        if not isinstance(self.detect_upsample, int) or not 0 <= self.detect_upsample <= 3:
            raise ValueError(f"prepare.detect_upsample must be 0..3, got {self.detect_upsample!r}")
        if self.fallback_detector not in (None, "cnn"):
            raise ValueError(f"prepare.fallback_detector must be cnn or null, got {self.fallback_detector!r}")
        if not 1.0 <= float(self.eye_scale) <= 20.0:
            raise ValueError(f"prepare.eye_scale must be in [1, 20], got {self.eye_scale!r}")

    @property
    def crop_size(self) -> tuple[int, int]:
        return self.crop_height, self.crop_width

    def fingerprint(self) -> str:
        """Changes whenever a setting or the processing version changes: invalidates cached rows."""
        payload = json.dumps({**asdict(self), "version": PREPARE_VERSION}, sort_keys=True)
        return hashlib.sha1(payload.encode()).hexdigest()[:12]


@dataclass
class PreparedFace:
    crop: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray  # (H, W) bool
    landmarks: np.ndarray  # (68, 2) float32, crop coordinates
    landmarks_image: np.ndarray  # (68, 2) float32, coordinates in the upright original photo
    transform: CropTransform  # original photo -> crop
    box: np.ndarray  # (4,) detection box in original coordinates
    n_faces: int
    detector: str  # which detector found the face: hog, or cnn (the fallback)
    image_size: tuple[int, int]  # (width, height) of the upright original


class NoFaceError(ImageError):
    def __init__(self, detail: str):
        super().__init__("no_face", detail)


def prepare_face(path: Path, config: PrepareConfig, detector: LandmarkDetector) -> PreparedFace:
    """Prepare the main face of one photo. Raises ImageError (status + detail) on any failure."""
    small = decode(path, config.detect_max_side, config.max_pixels)
    face, n_faces = detector.main_face(small.pixels)
    if face is None:
        searched = "dlib HOG" + (" and CNN" if detector.fallback else "")
        raise NoFaceError(f"{searched} found no face (searched at {small.pixels.shape[1]}x{small.pixels.shape[0]})")
    box = face.box / small.scale
    landmarks_image = (face.landmarks + 0.5) / small.scale - 0.5
    transform = _frame(landmarks_image, config)

    # Refine at the smallest decode that still has at least crop resolution over the frame.
    needed_side = math.ceil(max(small.original_size) * min(1.0, transform.scale))
    if needed_side > max(small.pixels.shape[:2]) + 1:
        sharp = decode(path, needed_side, config.max_pixels)
        refined = detector.landmarks(sharp.pixels, box * sharp.scale)
        landmarks_image = (refined + 0.5) / sharp.scale - 0.5
        transform = _frame(landmarks_image, config)
    else:
        sharp = small

    crop = extract_crop(sharp.pixels, transform.rescaled(sharp.scale), config.crop_size)
    landmarks = transform.to_crop(landmarks_image)
    return PreparedFace(
        crop=crop,
        mask=face_mask(landmarks, config.crop_size),
        landmarks=landmarks,
        landmarks_image=landmarks_image.astype(np.float32),
        transform=transform,
        box=box,
        n_faces=n_faces,
        detector=face.detector,
        image_size=small.original_size,
    )


def _frame(landmarks_image: np.ndarray, config: PrepareConfig) -> CropTransform:
    try:
        return frame_for(landmarks_image, config.crop_size, config.eye_scale)
    except ValueError as error:
        raise NoFaceError(str(error)) from error
