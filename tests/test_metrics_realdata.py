"""Metrics on real faces (../shared/data): the acceptance figures of the metrics issue.

Anonymised folders are built from the prepared crops themselves (links named `<pair_id>.png`)
or from a 101x101 Gaussian blur of their face region, so every expected value follows from
what the images are, not from a recorded result. dlib features are cached in .cache/metrics
by content, so a rerun only pays for what changed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter

from facedata.prepared import PreparedDataset
from infra.records import TEST_PAIRS, pair_table
from metrics import registry
from metrics.dlib_faces import hog_faces
from metrics.reid import lfw_verification_accuracy
from tests.helpers import METRICS_CACHE, write_prepared

pytestmark = pytest.mark.realdata



def prepared_sources(pairs: registry.PairSet) -> list[tuple[int, str]]:
    """(pair_id, source) of the pairs whose source photo was prepared: those an anonymiser can process."""
    rows = pairs.manifest[pairs.manifest["source"].isin(pairs.prepared.ok.index)]
    return list(zip(rows["pair_id"], rows["source"], strict=True))


def linked_copies(folder: Path, pairs: registry.PairSet) -> Path:
    """The unmodified source crop of every pair, as `<pair_id>.png`."""
    folder.mkdir(parents=True, exist_ok=True)
    for pair_id, source in prepared_sources(pairs):
        (folder / f"{pair_id}.png").symlink_to(pairs.crop_path(source).resolve())
    return folder


def blurred_copies(folder: Path, pairs: registry.PairSet) -> Path:
    """Every source crop with its face region blurred by a 101x101 Gaussian kernel (SPEC 4)."""
    sigma = 0.3 * ((101 - 1) / 2 - 1) + 0.8  # OpenCV's sigma for a 101-tap kernel
    folder.mkdir(parents=True, exist_ok=True)
    for pair_id, source in prepared_sources(pairs):
        crop, mask = pairs.prepared.crop(source).astype(np.float32), pairs.prepared.mask(source)[..., None]
        blurred = gaussian_filter(crop, sigma=(sigma, sigma, 0), truncate=50 / sigma, mode="nearest")
        Image.fromarray(np.where(mask, blurred, crop).round().astype(np.uint8)).save(folder / f"{pair_id}.png")
    return folder


def inputs(pairs: registry.PairSet, folder: Path, **settings) -> registry.MetricInputs:
    return registry.MetricInputs(pairs, images=folder, cache=METRICS_CACHE, **settings)


@pytest.fixture(scope="module")
def celeba(prepared_celeba) -> registry.PairSet:
    """Every aligned CelebA mini photo as the source of one pair."""
    prepared = PreparedDataset(prepared_celeba)
    return registry.PairSet(pair_table(TEST_PAIRS["celeba"], prepared.index, sorted(prepared.ok.index)), prepared)


@pytest.fixture(scope="module")
def lfw_fold1(lfw) -> registry.PairSet:
    return registry.PairSet(lfw.manifest[lfw.manifest["fold"] == 1], lfw.prepared)


# --- detection and pose -----------------------------------------------------------------------

@pytest.mark.slow
def test_unmodified_celeba_and_lfw_are_detected_by_dlib_and_mtcnn(celeba, lfw_fold1, tmp_path):
    for name, pairs in (("celeba", celeba), ("lfw", lfw_fold1)):
        unmodified = inputs(pairs, linked_copies(tmp_path / name, pairs))
        for metric in ("detection_dlib", "detection_mtcnn"):
            result = registry.calc(metric, unmodified)
            assert result["value"] >= 0.98, (name, result)
            assert result["n"] + result["n_skipped"] == len(pairs.manifest)


@pytest.mark.slow
def test_blurring_the_face_defeats_dlib_detection_on_lfw(lfw_fold1, tmp_path):
    result = registry.calc("detection_dlib", inputs(lfw_fold1, blurred_copies(tmp_path / "blur", lfw_fold1)))
    assert result["value"] < 0.5 and result["n"] >= 590


def dlib_pose(**values):
    """The pose error's options with dlib's landmarks (FAN's, the default, cannot be fetched here), `values` changed."""
    return registry.options("pose_error", detector="dlib", **values)


def test_pose_error_of_unmodified_crops(celeba, tmp_path):
    unmodified = inputs(celeba, linked_copies(tmp_path / "same", celeba))
    authors = registry.calc("pose_error", unmodified, dlib_pose())  # landmarks detected on both images, as the authors
    assert authors["n"] + authors["n_failed"] == 150 and authors["n_failed"] <= 3 and authors["value"] == 0.0
    prepared = registry.calc("pose_error", unmodified,
                             dlib_pose(reference="prepared", normalisation="euclidean"))
    assert 0.0 < prepared["value"] < 0.02  # not 0: prepare located landmarks on the full photo
    paper_code = registry.calc("pose_error", unmodified, dlib_pose(reference="prepared"))
    ratio = paper_code["per_pair"]["pose_error"] / prepared["per_pair"]["pose_error"]
    # Euclidean / mean(|dx|, |dy|) of the eye corners: 2 for level eyes, sqrt(2) at 45 degrees.
    assert 1.9 < ratio.median() <= 2.0 and ratio.min() >= np.sqrt(2) - 1e-9


def with_landmarks(pairs: registry.PairSet, landmarks: dict[str, np.ndarray], root: Path) -> registry.PairSet:
    """The given faces' prepared crops with other reference landmarks."""
    prepared = pairs.prepared
    faces = [{"key": key, "identity": prepared.identity(key), "crop": prepared.crop(key), "landmarks": points}
             for key, points in landmarks.items()]
    return registry.PairSet(pairs.manifest, PreparedDataset(write_prepared(root, faces)))


def test_pose_error_against_prepared_landmarks_is_zero_when_identical_and_exact_for_a_translation(celeba, tmp_path):
    folder = linked_copies(tmp_path / "same", celeba)
    subset = registry.PairSet(celeba.manifest.iloc[:12], celeba.prepared)
    faces = hog_faces([folder / f"{i}.png" for i in subset.manifest["pair_id"]], METRICS_CACHE, workers=1)
    assert (faces[:, 0] > 0).all()
    detected = {key: face[1:].reshape(68, 2) for key, face in zip(subset.manifest["source"], faces, strict=True)}
    identical = registry.calc("pose_error", inputs(with_landmarks(subset, detected, tmp_path / "a"), folder),
                              dlib_pose(reference="prepared"))
    assert identical["value"] == 0.0 and identical["n"] == 12
    shifted = {key: points + np.float32([3.0, -1.0]) for key, points in detected.items()}
    moved_inputs = inputs(with_landmarks(subset, shifted, tmp_path / "b"), folder)
    corners = [p[45] - p[36] for p in shifted.values()]
    for normalisation, scale in (("paper_code", lambda d: np.abs(d).mean()), ("euclidean", np.linalg.norm)):
        moved = registry.calc("pose_error", moved_inputs,
                              dlib_pose(reference="prepared", normalisation=normalisation))
        assert moved["value"] == pytest.approx(np.mean([(3.0 + 1.0) / 2 / scale(d) for d in corners]), rel=1e-6)


def test_a_faceless_image_is_a_counted_pose_failure(celeba, tmp_path):
    subset = registry.PairSet(celeba.manifest.iloc[:3], celeba.prepared)
    folder = linked_copies(tmp_path / "imgs", subset)
    (folder / "1.png").unlink()
    Image.fromarray(np.full((220, 180, 3), 128, np.uint8)).save(folder / "1.png")
    result = registry.calc("pose_error", inputs(subset, folder), dlib_pose())
    assert result["n"] == 2 and result["n_failed"] == 1 and result["failure_rate"] == pytest.approx(1 / 3)
    assert result["failed"] == {"no face in the anonymised image": 1}
    assert registry.calc("detection_dlib", inputs(subset, folder))["n_detected"] == 2


# --- verification -----------------------------------------------------------------------------

@pytest.mark.slow
def test_dlib_verifies_all_lfw_pairs_at_published_accuracy(lfw):
    result = lfw_verification_accuracy(lfw, "dlib", METRICS_CACHE)
    # Exactly the pairs naming a photo that prepare could not use (no face found) are left out.
    ok = lfw.prepared.ok.index
    unusable = ~(lfw.manifest["first"].isin(ok) & lfw.manifest["source"].isin(ok))
    assert result["n_calibration_skipped"] == unusable.sum() < 0.015 * 6000
    assert result["n_calibration_pairs"] == 6000 - unusable.sum()
    assert result["accuracy"] >= 0.985, result


@pytest.mark.slow
def test_dlib_verification_reid_on_lfw_fold1(lfw, lfw_fold1, tmp_path):
    """Anonymised images for fold 1 only: the other folds' rows are skipped, their pairs still calibrate."""
    same = inputs(lfw, linked_copies(tmp_path / "same", lfw_fold1))
    unmodified = registry.calc("verification_dlib", same)
    assert set(unmodified["per_fold"]) == {1} and unmodified["n"] + unmodified["n_skipped"] == 6000
    ok, fold1 = lfw.prepared.ok.index, lfw_fold1.manifest
    different = ~fold1["same"] & fold1["first"].isin(ok) & fold1["source"].isin(ok)
    assert unmodified["skipped"]["different-person pair"] == different.sum()
    assert unmodified["value"] == unmodified["real_rate"] >= 0.95
    blurred = registry.calc("verification_dlib", inputs(lfw, blurred_copies(tmp_path / "blur", lfw_fold1)))
    assert blurred["value"] < unmodified["value"] - 0.3


@pytest.mark.slow
def test_dlib_verification_reid_on_celeba_with_lfw_threshold(celeba, lfw, tmp_path):
    same = inputs(celeba, linked_copies(tmp_path / "same", celeba), calibration=lfw)
    unmodified = registry.calc("verification_dlib", same)
    assert unmodified["value"] == unmodified["real_rate"] and unmodified["rank1"] == unmodified["real_rank1"]
    assert unmodified["real_rank1"] >= 0.95 and unmodified["n_identities"] == 5
    blurred = registry.calc("verification_dlib",
                           inputs(celeba, blurred_copies(tmp_path / "blur", celeba), calibration=lfw))
    assert blurred["value"] < unmodified["value"] - 0.3 and blurred["real_rate"] == unmodified["real_rate"]
    with pytest.raises(ValueError, match="needs real LFW pairs"):
        registry.calc("verification_dlib", inputs(celeba, tmp_path / "same"))
