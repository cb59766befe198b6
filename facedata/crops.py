"""One photo in, one prepared face out: detection, landmarks, canonical crop and mask.

Large photos are detected at reduced size and the landmarks are refined at a resolution
that still covers the crop, so a 5000-px photo costs about as much as a small one.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np

from facedata.framing import CropTransform, extract_crop, face_mask, frame_for
from facedata.images import DecodedImage, ImageError, decode
from facedata.landmarks import LandmarkDetector
from infra.settings import at_least, between

#: Bump when the processing changes in a way that changes outputs for the same config.
#: 3: crops named after the whole key, degenerate photos get too_small, crop and mask digests in the index.
PREPARE_VERSION = 3
#: Libraries whose version can change a crop or mask for the same photo and settings.
_LIBRARIES = ("dlib", "dlib-bin", "pillow", "face_recognition_models")


@dataclass(frozen=True)
class PrepareConfig:
    crop_height: Annotated[int, at_least(16)] = 220  # canonical crop, the authors' 220x180 (HxW) CelebA size
    crop_width: Annotated[int, at_least(16)] = 180  # AnonyGAN needs multiples of 4, >= 48 (checked in pipelines.config)
    eye_scale: Annotated[float, between(1.0, 20.0)] = 5.0  # crop height = 2 * eye_scale * inner-eye distance
    detect_max_side: Annotated[int, at_least(16)] = 500  # photos are detected at most this large, then refined
    detect_upsample: Annotated[int, between(0, 3)] = 1  # dlib HOG upsampling (1 finds faces down to ~40 px)
    fallback_detector: Literal["cnn"] | None = "cnn"  # cnn: dlib's CNN where HOG finds no face | None: HOG only
    max_pixels: Annotated[int, at_least(16)] = 250_000_000  # larger photos get status too_large, undecoded
    workers: Annotated[int, at_least(0)] = 0  # processes; 0 = all cores (does not change any output)

    @property
    def crop_size(self) -> tuple[int, int]:
        return self.crop_height, self.crop_width

    def fingerprint(self) -> str:
        """Changes whenever a setting, the processing version or a library version changes: invalidates cached rows."""
        settings = {key: value for key, value in asdict(self).items() if key != "workers"}
        libraries = {name: _version(name) for name in _LIBRARIES}
        payload = json.dumps({**settings, "version": PREPARE_VERSION, "libraries": libraries}, sort_keys=True)
        return hashlib.sha1(payload.encode()).hexdigest()[:12]


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


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


def decode_for_detection(path: Path, config: PrepareConfig, detector: LandmarkDetector) -> DecodedImage:
    """The photo decoded at most `detect_max_side` large; ImageError `too_small` where no face could be found."""
    small = decode(path, config.detect_max_side, config.max_pixels)
    height, width = small.pixels.shape[:2]
    if min(height, width) < detector.smallest_face:
        original = "x".join(map(str, small.original_size))
        raise ImageError("too_small", f"{original} photo, searched at {width}x{height}: a side is below "
                                      f"{detector.smallest_face} px, the smallest face dlib finds at "
                                      f"prepare.detect_upsample = {detector.upsample}")
    return small


def no_face(small: DecodedImage, detector: LandmarkDetector) -> NoFaceError:
    """The error of a photo in which the detectors found no face."""
    searched = "dlib HOG" + (" and CNN" if detector.fallback else "")
    return NoFaceError(f"{searched} found no face (searched at {small.pixels.shape[1]}x{small.pixels.shape[0]})")


def prepare_face(path: Path, config: PrepareConfig, detector: LandmarkDetector) -> PreparedFace:
    """Prepare the main face of one photo. Raises ImageError (status + detail) on any failure."""
    small = decode_for_detection(path, config, detector)
    face, n_faces = detector.main_face(small.pixels)
    if face is None:
        raise no_face(small, detector)
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
