"""Acceptance on real faces from ../shared/data: how many photos prepare, and whether the crops are canonical."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from facedata.crops import PrepareConfig, prepare_face
from facedata.images import ImageError
from facedata.landmarks import LEFT_EYE_INNER, RIGHT_EYE_INNER, LandmarkDetector
from facedata.prepared import PreparedDataset
from infra.pool import imap_unordered

pytestmark = pytest.mark.realdata


def shares(root) -> tuple[int, int]:
    summary = json.loads((root / "summary.json").read_text())
    return summary["status"].get("ok", 0), summary["photos"]


def test_aligned_celeba_mini_all_prepared(prepared_celeba):
    assert shares(prepared_celeba) == (150, 150)


@pytest.mark.slow
def test_wild_celeba_mini_at_least_570_of_600(prepared_celeba_wild):
    ok, photos = shares(prepared_celeba_wild)
    assert photos == 600 and ok >= 570


@pytest.mark.slow
def test_lfw_pairs_photos_at_least_99_percent(prepared_lfw):
    ok, photos = shares(prepared_lfw)
    assert photos == 7701 and ok / photos >= 0.99


def test_crops_are_in_the_canonical_frame(prepared_celeba):
    dataset = PreparedDataset(prepared_celeba)
    for key in dataset.ok["key"][:30]:
        crop, mask, landmarks = dataset.crop(key), dataset.mask(key), dataset.landmarks(key)
        assert crop.shape == (220, 180, 3) and crop.dtype == np.uint8 and mask.shape == (220, 180)
        eyes = landmarks[[LEFT_EYE_INNER, RIGHT_EYE_INNER]].mean(axis=0)
        assert np.abs(eyes - (89.5, 109.5)).max() < 1.0
        assert np.linalg.norm(landmarks[RIGHT_EYE_INNER] - landmarks[LEFT_EYE_INNER]) == pytest.approx(22.0, abs=0.2)
        assert 0.08 < mask.mean() < 0.35  # the face, not the whole crop (measured 0.11-0.25 on this mini)


def test_crop_transform_maps_back_to_the_photo(prepared_celeba, celeba_aligned_root):
    dataset = PreparedDataset(prepared_celeba)
    key = dataset.ok["key"].iloc[0]
    row = dataset.index.loc[key]
    photo_landmarks = np.asarray(row["landmarks_image"]).reshape(68, 2)
    assert dataset.transform(key).to_image(dataset.landmarks(key)) == pytest.approx(photo_landmarks, abs=1e-3)


@pytest.mark.slow
def test_reader_refuses_keys_that_were_not_prepared(prepared_celeba_wild):
    dataset = PreparedDataset(prepared_celeba_wild)  # LFW has no such photo since the CNN fallback
    failed = dataset.index[dataset.index["status"] != "ok"]["key"].iloc[0]
    with pytest.raises(KeyError, match="was not prepared: no_face"):
        dataset.crop(failed)
    with pytest.raises(KeyError, match="is not in"):
        dataset.crop("999999.jpg")


def prepared_face(item: tuple[Path, str | None]):
    """(status, face or None) of prepare_face with the given fallback detector."""
    path, fallback = item
    try:
        return "ok", prepare_face(path, PrepareConfig(fallback_detector=fallback), LandmarkDetector(fallback=fallback))
    except ImageError as error:
        return error.status, None


@pytest.mark.slow
def test_cnn_fallback_finds_the_faces_hog_misses(prepared_lfw, lfw_root):
    index = PreparedDataset(prepared_lfw).index
    rescued = index[index["detector"] == "cnn"]
    assert 0 < len(rescued) < 0.01 * len(index) and (rescued["status"] == "ok").all()
    path = lfw_root / "lfw-deepfunneled" / rescued["key"].iloc[0]
    # In a worker, as prepare runs it: a process that ran dlib's CNN cannot fork working CNN workers (infra.pool).
    (_, (hog_only, _)), (_, (status, face)) = sorted(imap_unordered(prepared_face, [(path, None), (path, "cnn")], 1))
    assert hog_only == "no_face" and status == "ok" and face.detector == "cnn"
    eyes = face.landmarks[[39, 42]].mean(axis=0)
    assert np.abs(eyes - (89.5, 109.5)).max() < 1.0  # framed like every other face
