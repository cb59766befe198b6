"""Paste-back: a crop lands where its CropTransform says, only inside the face mask, only inside the photo."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facedata.crops import PrepareConfig
from facedata.framing import CropTransform, extract_crop
from facedata.images import decode
from facedata.landmarks import LandmarkDetector
from facedata.pasteback import FEATHER, blend_weight, paste_back
from facedata.photo_faces import find_boxes, frame_faces

CROP = (220, 180)


def distance_to_mask(photo_shape: tuple[int, ...], transform: CropTransform, mask: np.ndarray) -> np.ndarray:
    """Per photo pixel: crop pixels from its place in the crop to the mask (0 inside; inf outside the crop)."""
    distance = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    rows, cols = np.indices(photo_shape[:2])
    place = np.rint(transform.to_crop(np.stack([cols, rows], axis=-1).reshape(-1, 2).astype(np.float64))).astype(int)
    inside = (place[:, 0] >= 0) & (place[:, 0] < mask.shape[1]) & (place[:, 1] >= 0) & (place[:, 1] < mask.shape[0])
    result = np.full(len(place), np.inf)
    result[inside] = distance[place[inside, 1], place[inside, 0]]
    return result.reshape(photo_shape[:2])


def oval_mask(shape=CROP) -> np.ndarray:
    rows, cols = np.indices(shape)
    return ((rows - shape[0] * 0.55) / (shape[0] * 0.3)) ** 2 + ((cols - shape[1] / 2) / (shape[1] * 0.3)) ** 2 <= 1


@pytest.mark.realdata
def test_original_crop_pastes_back_onto_itself(lfw_root):
    """Method `original`: outside the mask (plus the bilinear taps) bit-identical; inside, resampling error only.

    Measured on the first 10 LFW photos (0.79-1.0 crop px per photo px), per photo over the mask's pixels:
    mean absolute error 0.76-1.51 levels (of 255), 99th percentile 3-7, maximum 7-17. (In-the-wild faces
    larger than the crop lose the detail a 220x180 crop cannot hold: means 1-8, maxima up to ~220 on hair.)
    """
    prepare = PrepareConfig()
    detector = LandmarkDetector(prepare.detect_upsample, prepare.fallback_detector).load()
    paths = sorted((lfw_root / "lfw-deepfunneled").glob("Aaron_*/*.jpg"))[:4]
    for path in paths:
        photo = decode(path, None, prepare.max_pixels).pixels.copy()
        faces, problems = frame_faces(photo, find_boxes(path, prepare, detector), prepare, detector)
        assert faces and not problems, path
        face = faces[0]
        pasted = photo.copy()
        paste_back(pasted, face.crop, face.mask, face.transform)
        error = np.abs(pasted.astype(int) - photo).max(axis=2)
        far = distance_to_mask(photo.shape, face.transform, face.mask) > 2
        assert far.any() and (error[far] == 0).all(), path
        touched = distance_to_mask(photo.shape, face.transform, face.mask) == 0
        assert error[touched].mean() <= 2.5 and np.percentile(error[touched], 99) <= 10 and error.max() <= 24, path


@pytest.mark.parametrize("scale", [0.5, 1.0, 2.5])
def test_a_marked_crop_pixel_lands_where_to_image_says(scale):
    transform = CropTransform(x0=37.3, y0=21.6, scale=scale)
    crop = np.zeros((*CROP, 3), np.uint8)
    marked = np.array([101.0, 87.0])  # (x, y) crop pixel centre
    crop[int(marked[1]), int(marked[0])] = 255
    photo = np.zeros((400, 300, 3), np.uint8)
    paste_back(photo, crop, np.ones(CROP, bool), transform, feather=0)
    weights = photo[..., 0].astype(float)
    assert weights.sum() > 0
    rows, cols = np.indices(weights.shape)
    centroid = np.array([(cols * weights).sum(), (rows * weights).sum()]) / weights.sum()
    expected = transform.to_image(marked[None])[0]
    # Bilinear interpolation keeps the centroid; a crop finer than the photo is area-averaged first, which keeps
    # the mark in its photo pixel (a position finer than that pixel is not representable) instead of skipping it.
    assert np.abs(centroid - expected).max() <= (0.05 if scale <= 1 else 0.5)


def test_an_edge_padded_crop_pastes_back_only_inside_the_photo():
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (120, 90, 3), dtype=np.uint8)
    transform = CropTransform(x0=-40.0, y0=-25.0, scale=1.4)  # the frame overhangs the top and left borders
    crop = extract_crop(photo, transform, CROP)  # edge padded where it overhangs
    grey = np.full_like(crop, 128)
    pasted = photo.copy()
    paste_back(pasted, grey, np.ones(CROP, bool), transform, feather=0)
    assert pasted.shape == photo.shape
    inner = distance_to_mask(photo.shape, transform, np.ones(CROP, bool)) == 0
    box_right, box_bottom = transform.to_image(np.array([[CROP[1] - 0.5, CROP[0] - 0.5]]))[0]
    well_inside = inner.copy()
    well_inside[int(box_bottom) - 1 :, :] = well_inside[:, int(box_right) - 1 :] = False  # the bilinear fringe
    assert (pasted[well_inside] == 128).all()
    assert (pasted[~inner] == photo[~inner]).all()  # the rest of the photo, beyond the frame, untouched


def test_hard_and_feathered_edges_differ_only_near_the_mask_edge():
    rng = np.random.default_rng(1)
    photo = rng.integers(0, 256, (300, 260, 3), dtype=np.uint8)
    transform = CropTransform(x0=30.0, y0=20.0, scale=0.9)
    crop, mask = rng.integers(0, 256, (*CROP, 3), dtype=np.uint8), oval_mask()
    hard, feathered = photo.copy(), photo.copy()
    paste_back(hard, crop, mask, transform, feather=0)
    paste_back(feathered, crop, mask, transform, feather=FEATHER)
    differs = (hard != feathered).any(axis=2)
    assert differs.any()
    inside_distance = distance_to_mask(photo.shape, transform, ~mask)  # crop pixels from the place to the edge
    assert (inside_distance[differs] <= FEATHER + 2).all()
    assert ((inside_distance > FEATHER + 2) & ~differs).any()  # the face's core is the same crop in both
    outside = distance_to_mask(photo.shape, transform, mask) > 2
    assert (hard[outside] == photo[outside]).all() and (feathered[outside] == photo[outside]).all()


def test_blend_weight_rises_inwards_from_the_edge():
    mask = oval_mask()
    weight = blend_weight(mask, feather=4)
    assert (weight[~mask] == 0).all() and weight[mask].min() > 0 and weight.max() == 1
    assert (blend_weight(mask, feather=0) == mask).all()
    with pytest.raises(ValueError, match="feather"):
        blend_weight(mask, feather=-1)
