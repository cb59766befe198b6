"""68 landmarks by face_alignment's FAN, the way the authors' pose error found them.

The authors' `compute_pose_bis` (evaluation/evaluate.py) builds
`face_alignment.FaceAlignment(LandmarksType._2D, flip_input=False)`: the SFD face detector
(filter threshold 0.5), then the large 2D FAN on each box; `fa.get_landmarks(io.imread(path))`
returns one face per box in the order SFD returned the boxes, and they keep `preds[0]`. In
face_alignment 1.5.0 (pinned here) that order is its non-maximum suppression's, by descending
score (`detection/sfd/bbox.py`, `nms`), so `preds[0]` is the face of the best-scoring box; the
authors did not pin face_alignment. We build the same object (without torch.compile, which
only changes speed) and call the same `get_landmarks` on the whole RGB image.

It is `pose_error`'s default detector. face_alignment fetches both networks' weights into the
torch hub cache itself (`<hub>/checkpoints/`, file names from its own URLs); where that fails
(offline) the metric is not computed, and the error names each file, its URL and where to put
it. Neither file has a published digest, so none is checked; the SHA-256 of each file used is
recorded with the result instead.
"""

from __future__ import annotations

import functools
import hashlib
import urllib.parse
from pathlib import Path

import numpy as np
import torch

from facedata.images import read_rgb
from infra.fetch import file_digest
from metrics.store import cached_features, content_digest
from metrics.weights import WeightsUnavailableError, checkpoint_dir

CACHE_VERSION = 1  # bump when the landmarks of a file change


def weight_files() -> dict[str, str]:
    """{network: URL} of the files face_alignment fetches for the authors' configuration."""
    from face_alignment import api
    from face_alignment.detection.sfd import sfd_detector

    return {"fan": api.models_urls["2DFAN-4"], "sfd": sfd_detector.models_urls["s3fd"]}


def _cached_file(url: str) -> Path:
    return checkpoint_dir() / Path(urllib.parse.urlparse(url).path).name


@functools.cache
def _aligner(device: torch.device, hub: Path):
    """(FaceAlignment, provenance) for the authors' settings; `hub` keys the cache on the weights' folder."""
    import face_alignment

    try:
        aligner = face_alignment.FaceAlignment(face_alignment.LandmarksType.TWO_D, flip_input=False,
                                               device=str(device), compile=False)
    except OSError as error:  # urllib's URLError included: face_alignment could not fetch a file
        files = "; ".join(f"{url} -> {_cached_file(url)}" for url in weight_files().values())
        raise WeightsUnavailableError(f"face_alignment could not fetch its FAN/SFD weights ({error}). Download "
                                      f"them by hand and place them in the torch hub cache: {files}") from error
    record = {name: {"file": _cached_file(url).name, "sha256": file_digest(_cached_file(url), "sha256")}
              for name, url in weight_files().items()}
    return aligner, record


def landmarker(device: torch.device):
    """(FaceAlignment, {network: {file, sha256}}) of the authors' configuration, fetched if needed."""
    return _aligner(device, checkpoint_dir())


def fan_face(aligner, path: Path) -> np.ndarray:
    """(137,) float32: the number of faces found, then the first face's 68 landmarks (NaN if none)."""
    found = aligner.get_landmarks(read_rgb(path))
    if not found:
        return np.concatenate([[0], np.full(136, np.nan)]).astype(np.float32)
    return np.concatenate([[len(found)], np.asarray(found[0], np.float32).ravel()]).astype(np.float32)


def fan_faces(paths: list[Path], cache: Path, device: torch.device) -> tuple[np.ndarray, dict]:
    """`fan_face` of every image, (N, 137), cached by content and weights; and the weights' record."""
    aligner, record = landmarker(device)
    weights = hashlib.sha1("".join(entry["sha256"] for entry in record.values()).encode()).hexdigest()[:16]
    faces = cached_features(cache, f"fan2d-sfd-{weights}", CACHE_VERSION, [content_digest(p) for p in paths],
                            lambda: np.stack([fan_face(aligner, p) for p in paths]) if paths else np.zeros((0, 137)))
    return faces, record
