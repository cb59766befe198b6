"""dlib's HOG face detector and 68-point shape predictor, shared by `prepare` and the metrics.

Landmarks follow the iBUG 300-W numbering, 0-based, as (x, y) float arrays of shape (68, 2).
Coordinates are pixel-centre based, as dlib returns them: (0, 0) is the centre of the
top-left pixel.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

#: CIAGAN's 29-landmark subset (ablation row "29 lm"): jaw 0-16, nose bridge 27-30, inner lips 60-67.
CIAGAN_29 = tuple(range(0, 17)) + tuple(range(27, 31)) + tuple(range(60, 68))
ALL_68 = tuple(range(68))
LANDMARK_SETS = {68: ALL_68, 29: CIAGAN_29}

LEFT_EYE_OUTER, RIGHT_EYE_OUTER = 36, 45
LEFT_EYE_INNER, RIGHT_EYE_INNER = 39, 42

#: Side of the window dlib's HOG and CNN face detectors scan: the smallest face they find without upsampling.
DETECTOR_WINDOW = 80


def dlib_model_path(filename: str) -> Path:
    """Path of a model file shipped by the `face_recognition_models` package.

    The package's `__init__` imports `pkg_resources`, which current setuptools no longer
    provides, so the files are located through the import system without importing it.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("face_recognition_models is not installed: pip install -e . installs it")
    path = Path(spec.origin).parent / "models" / filename
    if not path.is_file():
        raise FileNotFoundError(f"{filename} is missing from face_recognition_models at {path}")
    return path


@dataclass(frozen=True)
class Face:
    box: np.ndarray  # (4,) float: left, top, right, bottom in the coordinates of the input image
    landmarks: np.ndarray  # (68, 2) float32
    detector: str = "hog"  # which detector found the face


def select_face(boxes: np.ndarray, width: int, height: int) -> int:
    """Index of the face to keep among several: the largest, discounted by distance from the centre.

    score = area * (1 - d), d = distance from the box centre to the image centre divided
    by the half-diagonal (0 at the centre, 1 in a corner).
    """
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
    distance = np.hypot(centres[:, 0] - width / 2, centres[:, 1] - height / 2) / np.hypot(width / 2, height / 2)
    return int(np.argmax(areas * np.clip(1.0 - distance, 0.0, 1.0)))


class LandmarkDetector:
    """HOG detection plus 68 landmarks. Not thread-safe; make one per worker process.

    With `fallback="cnn"`, a photo in which HOG finds no face is searched again with dlib's
    CNN (MMOD) detector, which finds frontal and turned faces HOG misses at about 100 times
    the cost; it only runs on HOG's failures. Metrics that reproduce the paper's dlib
    detection rate must use HOG alone (the default).
    """

    def __init__(self, upsample: int = 1, fallback: str | None = None):
        if upsample < 0:
            raise ValueError(f"upsample must be >= 0, got {upsample}")
        if fallback not in (None, "cnn"):
            raise ValueError(f"fallback must be None or 'cnn', got {fallback!r}")
        self.upsample = upsample
        self.fallback = fallback

    @property
    def smallest_face(self) -> int:
        """Side in pixels of the smallest face the detectors find; a smaller image holds no detectable face.

        dlib's CNN also fails outright (an internal assertion) on images under 10 px, which this
        bound keeps away from it for every allowed upsampling (0-3).
        """
        return DETECTOR_WINDOW // 2**self.upsample

    def load(self) -> LandmarkDetector:
        """Load the models now (they load on first use otherwise); returns self.

        A process that loads them before forking workers shares them with all of them.
        """
        _ = self._detector, self._predictor
        if self.fallback == "cnn":
            _ = self._cnn
        return self

    @cached_property
    def _detector(self):
        import dlib

        return dlib.get_frontal_face_detector()

    @cached_property
    def _cnn(self):
        import dlib

        return dlib.cnn_face_detection_model_v1(str(dlib_model_path("mmod_human_face_detector.dat")))

    @cached_property
    def _predictor(self):
        import dlib

        return dlib.shape_predictor(str(dlib_model_path("shape_predictor_68_face_landmarks.dat")))

    def detect(self, rgb: np.ndarray) -> np.ndarray:
        """All face boxes (n, 4) as float (left, top, right, bottom)."""
        rects = self._detector(np.ascontiguousarray(rgb), self.upsample)
        return np.array([[r.left(), r.top(), r.right(), r.bottom()] for r in rects], dtype=np.float64).reshape(-1, 4)

    def landmarks(self, rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
        """68 landmarks inside `box` (left, top, right, bottom), float32 (68, 2)."""
        import dlib

        rect = dlib.rectangle(*(int(round(v)) for v in box))
        shape = self._predictor(np.ascontiguousarray(rgb), rect)
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)

    def detect_cnn(self, rgb: np.ndarray) -> np.ndarray:
        """Face boxes (n, 4) from the CNN detector, without upsampling.

        Upsampling would find smaller faces at four times the cost; measured on the HOG
        failures: LFW 40/40 either way (0.38 vs 1.62 s), wild CelebA 17/20 vs 19/20 (1.1 vs 4.6 s).
        """
        found = self._cnn(np.ascontiguousarray(rgb), 0)
        rects = [d.rect for d in found]
        return np.array([[r.left(), r.top(), r.right(), r.bottom()] for r in rects], dtype=np.float64).reshape(-1, 4)

    def find(self, rgb: np.ndarray) -> tuple[np.ndarray, str]:
        """Every face box (n, 4) HOG finds, or the fallback's where HOG finds none; and which detector found them."""
        boxes = self.detect(rgb)
        if len(boxes) == 0 and self.fallback == "cnn":
            return self.detect_cnn(rgb), "cnn"
        return boxes, "hog"

    def main_face(self, rgb: np.ndarray) -> tuple[Face | None, int]:
        """The selected face (see `select_face`) and the number of faces found."""
        boxes, detector = self.find(rgb)
        if len(boxes) == 0:
            return None, 0
        box = boxes[select_face(boxes, rgb.shape[1], rgb.shape[0])]
        return Face(box, self.landmarks(rgb, box), detector), len(boxes)
