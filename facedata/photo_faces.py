"""Every face of a photo in the canonical frame, with the transform that pastes it back.

`prepare` keeps the main face of each photo; anonymising a photo needs all of them. The two
steps follow prepare's: faces are found on a copy at most `prepare.detect_max_side` large
(`find_boxes`, cheap on a 5000-px photo), then each face's landmarks are refined on the
full-resolution photo and it is framed and cropped there (`frame_faces`), so the crop, its mask
and its transform refer to the photo's own pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facedata.crops import PrepareConfig, decode_for_detection, no_face
from facedata.framing import CropTransform, extract_crop, face_mask, frame_for
from facedata.landmarks import LandmarkDetector


@dataclass(frozen=True)
class FramedFace:
    index: int  # its box's position among the photo's boxes
    crop: np.ndarray  # (H, W, 3) uint8, the canonical frame
    mask: np.ndarray  # (H, W) bool, True inside the face
    landmarks: np.ndarray  # (68, 2) float32, crop coordinates
    transform: CropTransform  # full-resolution photo -> crop


def find_boxes(path: Path, config: PrepareConfig, detector: LandmarkDetector) -> np.ndarray:
    """Every face box (n >= 1, 4) in the full photo's coordinates, left to right.

    Raises ImageError (status + detail): unreadable, too_large, too_small, no_face.
    """
    small = decode_for_detection(path, config, detector)
    boxes, _ = detector.find(small.pixels)
    if len(boxes) == 0:
        raise no_face(small, detector)
    boxes = boxes / small.scale
    return boxes[np.argsort(boxes[:, 0], kind="stable")]


def frame_faces(photo: np.ndarray, boxes: np.ndarray, config: PrepareConfig, detector: LandmarkDetector
                ) -> tuple[list[FramedFace], list[str]]:
    """The faces of `boxes` framed in `photo` (full resolution), and why each face that could not be was not."""
    faces, problems = [], []
    for index, box in enumerate(boxes):
        landmarks_image = detector.landmarks(photo, box)
        try:
            transform = frame_for(landmarks_image, config.crop_size, config.eye_scale)
        except ValueError as error:
            problems.append(str(error))
            continue
        landmarks = transform.to_crop(landmarks_image)
        faces.append(FramedFace(index, extract_crop(photo, transform, config.crop_size),
                                face_mask(landmarks, config.crop_size), landmarks, transform))
    return faces, problems
