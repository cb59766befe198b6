"""Pose error and face detection rates (SPEC 5)."""

from __future__ import annotations

from typing import Annotated

import numpy as np
import pandas as pd
import torch

from facedata.compat import ensure_torchvision
from facedata.config import unit_interval
from facedata.images import read_rgb
from facedata.landmarks import LEFT_EYE_OUTER, RIGHT_EYE_OUTER
from metrics.dlib_faces import hog_faces
from metrics.registry import MetricInputs, register
from metrics.store import cached_features, content_digest


def normalised_l1(detected: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per face: mean absolute coordinate error over the 68 landmarks / reference outer-eye distance (36-45).

    detected, reference: (N, 68, 2). Returns (N,).
    """
    detected, reference = np.asarray(detected, np.float64), np.asarray(reference, np.float64)
    eye_distance = np.linalg.norm(reference[:, RIGHT_EYE_OUTER] - reference[:, LEFT_EYE_OUTER], axis=1)
    return np.abs(detected - reference).mean(axis=(1, 2)) / eye_distance


def _dlib_pass(inputs: MetricInputs):
    rows, skipped = inputs.evaluable()
    faces = hog_faces([inputs.image_path(pair_id) for pair_id in rows["pair_id"]], inputs.cache, inputs.workers)
    return rows, skipped, faces


@register
def pose_error(inputs: MetricInputs) -> dict:
    """dlib's 68 landmarks on each anonymised image vs the source's prepared landmarks.

    Images without a detected face are left out of the mean (as the authors did) and counted.
    """
    rows, skipped, faces = _dlib_pass(inputs)
    found = faces[:, 0] > 0
    reference = np.stack([inputs.pairs.prepared.landmarks(key) for key in rows["source"][found]]) if found.any() \
        else np.zeros((0, 68, 2))
    errors = normalised_l1(faces[found, 1:].reshape(-1, 68, 2), reference)
    return {"value": float(errors.mean()) if len(errors) else float("nan"),
            "std": float(errors.std()) if len(errors) else float("nan"),
            "n": int(found.sum()), "n_failed": int((~found).sum()),
            "failure_rate": float((~found).mean()) if len(found) else float("nan"), "skipped": skipped,
            "per_pair": pd.DataFrame({"pair_id": rows["pair_id"].to_numpy()[found], "pose_error": errors})}


@register
def detection_dlib(inputs: MetricInputs) -> dict:
    """Share of anonymised images where dlib's HOG detector (upsample 1) finds at least one face."""
    rows, skipped, faces = _dlib_pass(inputs)
    detected = faces[:, 0] > 0
    return {"value": float(detected.mean()) if len(rows) else float("nan"), "n": len(rows),
            "n_detected": int(detected.sum()), "skipped": skipped,
            "per_pair": pd.DataFrame({"pair_id": rows["pair_id"].to_numpy(), "detected_dlib": detected})}


@register
def detection_mtcnn(inputs: MetricInputs, *, threshold: Annotated[float, unit_interval] = 0.7) -> dict:
    """Share of anonymised images where facenet-pytorch's MTCNN finds at least one face.

    `threshold` is MTCNN's final-stage probability threshold (its default: 0.7). Same-size
    crops go through MTCNN a batch at a time; face counts are cached by content.
    """
    ensure_torchvision()
    from facenet_pytorch import MTCNN

    rows, skipped = inputs.evaluable()
    mtcnn = MTCNN(keep_all=True, thresholds=[0.6, 0.7, threshold], device=inputs.torch_device)
    paths = [inputs.image_path(pair_id) for pair_id in rows["pair_id"]]

    @torch.inference_mode()
    def count_faces() -> np.ndarray:
        counts = []
        for start in range(0, len(paths), inputs.batch_size):
            boxes, _ = mtcnn.detect(np.stack([read_rgb(p) for p in paths[start:start + inputs.batch_size]]))
            counts.extend(0 if b is None else len(b) for b in boxes)
        return np.array(counts, dtype=np.int32)

    faces = cached_features(inputs.cache, f"mtcnn-{threshold}", [content_digest(p) for p in paths], count_faces)
    detected = faces > 0
    return {"value": float(detected.mean()) if len(rows) else float("nan"), "n": len(rows),
            "n_detected": int(detected.sum()), "skipped": skipped,
            "per_pair": pd.DataFrame({"pair_id": rows["pair_id"].to_numpy(), "detected_mtcnn": detected})}
