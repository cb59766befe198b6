"""Pose error and face detection rates (SPEC 5).

Pose error, as the authors' `compute_pose_bis` (evaluation/evaluate.py) computed it by
default: 68 landmarks found on both the original and the anonymised image by the same
detector; per pair, the mean absolute coordinate error divided by the mean absolute
coordinate difference of the original's outer eye corners 36 and 45; mean (and unbiased std)
over the pairs where both images have a face. Options: the detector (`fan`, the authors', or
`dlib`), the reference landmarks (`detected` on the original, or the `prepared` ones) and the
normalisation (`paper_code`, or `euclidean`: the corners' Euclidean distance).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from facedata.images import read_rgb
from facedata.landmarks import LEFT_EYE_OUTER, RIGHT_EYE_OUTER
from metrics import uncertainty
from metrics.dlib_faces import hog_faces
from metrics.fan import fan_faces
from metrics.options import MtcnnOptions, NoOptions, PoseOptions
from metrics.registry import MetricInputs, lookup
from metrics.store import cached_features, content_digest
from runtime.torchvision_compat import ensure_torchvision

MTCNN_CACHE_VERSION = 1  # bump when the face counts of a file change


def normalised_l1(detected: np.ndarray, reference: np.ndarray, normalisation: str = "paper_code") -> np.ndarray:
    """Per face: mean absolute coordinate error over the 68 landmarks / the reference's outer-eye (36-45) scale.

    The scale is the mean of |dx| and |dy| between the corners (`paper_code`, the authors'
    `L1Loss(lm[36], lm[45])`) or their Euclidean distance (`euclidean`), about twice as large for
    level eyes. detected, reference: (N, 68, 2). Returns (N,).
    """
    detected, reference = np.asarray(detected, np.float64), np.asarray(reference, np.float64)
    corners = reference[:, RIGHT_EYE_OUTER] - reference[:, LEFT_EYE_OUTER]
    scale = np.abs(corners).mean(axis=1) if normalisation == "paper_code" else np.linalg.norm(corners, axis=1)
    return np.abs(detected - reference).mean(axis=(1, 2)) / scale


def detected_faces(detector: str, paths: list[Path], inputs: MetricInputs) -> tuple[np.ndarray, dict]:
    """(N, 137): faces found, then the kept face's 68 landmarks; and the record of any weights used."""
    if detector == "fan":
        return fan_faces(paths, inputs.cache, inputs.torch_device)
    return hog_faces(paths, inputs.cache, inputs.workers), {}


def _reference_landmarks(inputs: MetricInputs, rows: pd.DataFrame, detector: str, reference: str):
    """(found (N,), landmarks (N, 68, 2)) of each row's original photo."""
    sources = rows["source"]
    if reference == "prepared":
        landmarks = [inputs.pairs.prepared.landmarks(key) for key in sources]
        return np.ones(len(rows), bool), np.stack(landmarks) if landmarks else np.zeros((0, 68, 2))
    keys = inputs.pairs.prepared_keys("source")
    faces, _ = detected_faces(detector, [inputs.pairs.crop_path(key) for key in keys], inputs)
    faces = lookup(keys, faces, sources)
    return faces[:, 0] > 0, faces[:, 1:].reshape(-1, 68, 2)


def pose_error(inputs: MetricInputs, options: PoseOptions) -> dict:
    """Landmark error of each anonymised image against its original photo (see the module doc).

    Pairs where either image has no detected face are left out of the mean (as the authors
    did) and counted: `n_failed` pairs, `failed` per image kind.
    """
    detector = options.detector
    rows, skipped = inputs.evaluable()
    faces, record = detected_faces(detector, [inputs.image_path(pair_id) for pair_id in rows["pair_id"]], inputs)
    found = faces[:, 0] > 0
    reference_found, reference_landmarks = _reference_landmarks(inputs, rows, detector, options.reference)
    usable = found & reference_found
    errors = normalised_l1(faces[usable, 1:].reshape(-1, 68, 2), reference_landmarks[usable], options.normalisation)
    failed = Counter({"no face in the anonymised image": int((~found).sum()),
                      "no face in the original": int((~reference_found).sum())})
    return {"value": float(errors.mean()) if len(errors) else float("nan"),
            # the authors' torch.std_mean: unbiased
            "std": float(errors.std(ddof=1)) if len(errors) > 1 else float("nan"),
            "interval": uncertainty.mean(errors, inputs.interval),
            "n": int(usable.sum()), "n_failed": int((~usable).sum()), "failed": dict(+failed),
            "failure_rate": float((~usable).mean()) if len(usable) else float("nan"),
            **({"weights": record} if record else {}), "skipped": skipped,
            "per_pair": pd.DataFrame({"pair_id": rows["pair_id"].to_numpy()[usable], "pose_error": errors})}


def detection_dlib(inputs: MetricInputs, options: NoOptions) -> dict:
    """Share of anonymised images where dlib's HOG detector (upsample 1) finds at least one face."""
    rows, skipped = inputs.evaluable()
    faces = hog_faces([inputs.image_path(pair_id) for pair_id in rows["pair_id"]], inputs.cache, inputs.workers)
    return _detection_share(rows, faces[:, 0] > 0, skipped, inputs, "detection_dlib")


def detection_mtcnn(inputs: MetricInputs, options: MtcnnOptions) -> dict:
    """Share of anonymised images where facenet-pytorch's MTCNN finds at least one face.

    `options.threshold` is MTCNN's final-stage probability threshold. Same-size crops go through
    MTCNN a batch at a time; face counts are cached by content.
    """
    ensure_torchvision()
    from facenet_pytorch import MTCNN

    rows, skipped = inputs.evaluable()
    mtcnn = MTCNN(keep_all=True, thresholds=[0.6, 0.7, options.threshold], device=inputs.torch_device)
    paths = [inputs.image_path(pair_id) for pair_id in rows["pair_id"]]

    @torch.inference_mode()
    def count_faces() -> np.ndarray:
        counts = []
        for start in range(0, len(paths), inputs.batch_size):
            boxes, _ = mtcnn.detect(np.stack([read_rgb(p) for p in paths[start:start + inputs.batch_size]]))
            counts.extend(0 if b is None else len(b) for b in boxes)
        return np.array(counts, dtype=np.int32)

    faces = cached_features(inputs.cache, f"mtcnn-{options.threshold}", MTCNN_CACHE_VERSION,
                            [content_digest(p) for p in paths], count_faces)
    return _detection_share(rows, faces > 0, skipped, inputs, "detection_mtcnn")


def _detection_share(rows: pd.DataFrame, detected: np.ndarray, skipped: Counter, inputs: MetricInputs,
                     name: str) -> dict:
    """The share of images with a face, its interval, and each pair's outcome."""
    return {"value": float(detected.mean()) if len(rows) else float("nan"), "n": len(rows),
            "n_detected": int(detected.sum()), "interval": uncertainty.share(int(detected.sum()), len(rows),
                                                                             inputs.interval),
            "skipped": skipped, "per_pair": pd.DataFrame({"pair_id": rows["pair_id"].to_numpy(), name: detected})}
