"""dlib per image, run in worker processes: HOG faces with landmarks, and the ResNet face descriptor.

Both work on crop files, so the workers read the images themselves and only paths and small
arrays cross process boundaries. Results are cached by content (see `metrics.store`).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from facedata.images import read_rgb
from facedata.landmarks import LandmarkDetector, dlib_model_path
from metrics.store import cached_features, content_digest, map_parallel

DESCRIPTOR_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
HOG_UPSAMPLE = 1  # SPEC 5: the detection rate uses dlib's HOG detector with upsample 1
CACHE_VERSION = 1  # bump when the faces or descriptors of a file change


@functools.cache
def _detector() -> LandmarkDetector:
    return LandmarkDetector(upsample=HOG_UPSAMPLE)


@functools.cache
def _descriptor_model():
    import dlib

    return dlib.face_recognition_model_v1(str(dlib_model_path(DESCRIPTOR_MODEL)))


def hog_face(path: Path) -> np.ndarray:
    """(137,) float32: the number of faces found, then the main face's 68 landmarks (NaN if none)."""
    face, n_faces = _detector().main_face(read_rgb(path))
    landmarks = face.landmarks.ravel() if face is not None else np.full(136, np.nan, np.float32)
    return np.concatenate([[n_faces], landmarks]).astype(np.float32)


def descriptor(item: tuple[Path, np.ndarray]) -> np.ndarray:
    """(128,) float32 ResNet face descriptor of the face at the given (68, 2) landmarks, no jitter.

    Aligning with known landmarks skips a second detection and keeps real and anonymised
    images of one pose aligned identically.
    """
    import dlib

    path, landmarks = item
    rgb = read_rgb(path)
    height, width = rgb.shape[:2]
    points = [dlib.point(int(round(x)), int(round(y))) for x, y in landmarks]
    shape = dlib.full_object_detection(dlib.rectangle(0, 0, width - 1, height - 1), points)
    return np.asarray(_descriptor_model().compute_face_descriptor(rgb, shape, 0), dtype=np.float32)


def hog_faces(paths: list[Path], cache: Path, workers: int) -> np.ndarray:
    """`hog_face` of every image, (N, 137), cached by content."""
    digests = [content_digest(path) for path in paths]
    return cached_features(cache, f"dlib-hog-up{HOG_UPSAMPLE}", CACHE_VERSION, digests,
                           lambda: np.stack(map_parallel(hog_face, paths, workers)) if paths else np.zeros((0, 137)))


def descriptors(paths: list[Path], landmarks: np.ndarray, cache: Path, workers: int) -> np.ndarray:
    """`descriptor` of every (image, landmarks), (N, 128), cached by content of both."""
    landmarks = np.asarray(landmarks, dtype=np.float32).reshape(len(paths), 68, 2)
    digests = [content_digest(path, points.tobytes()) for path, points in zip(paths, landmarks, strict=True)]
    items = list(zip(paths, landmarks, strict=True))
    return cached_features(cache, "dlib-resnet-v1", CACHE_VERSION, digests,
                           lambda: np.stack(map_parallel(descriptor, items, workers)) if items else np.zeros((0, 128)))
