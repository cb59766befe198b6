"""Crop geometry, the face mask and face selection, on synthetic inputs with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from facedata.framing import CropTransform, extract_crop, face_mask, face_polygon, frame_for
from facedata.landmarks import select_face


def synthetic_landmarks(centre=(100.0, 120.0), inner_eye_distance=20.0) -> np.ndarray:
    points = np.zeros((68, 2), np.float32)
    cx, cy = centre
    points[39] = (cx - inner_eye_distance / 2, cy)
    points[42] = (cx + inner_eye_distance / 2, cy)
    jaw_x = np.linspace(cx - 40, cx + 40, 17)
    jaw_y = cy + 40 * np.sin(np.linspace(0, np.pi, 17))
    points[0:17] = np.stack([jaw_x, jaw_y], axis=1)
    points[19] = (cx - 25, cy - 15)
    points[24] = (cx + 25, cy - 15)
    return points


def test_frame_centres_the_eyes_and_sets_the_scale():
    landmarks = synthetic_landmarks(inner_eye_distance=22.0)
    transform = frame_for(landmarks, (220, 180), eye_scale=5.0)
    assert transform.scale == pytest.approx(220 / (2 * 5.0 * 22.0))
    eyes = transform.to_crop(landmarks[[39, 42]]).mean(axis=0)
    assert eyes == pytest.approx(((180 - 1) / 2, (220 - 1) / 2), abs=1e-4)


def test_transform_round_trip():
    transform = CropTransform(x0=-12.25, y0=40.5, scale=0.37)
    points = np.random.default_rng(0).uniform(0, 500, (68, 2)).astype(np.float32)
    assert transform.to_image(transform.to_crop(points)) == pytest.approx(points, abs=1e-3)
    assert CropTransform.from_list(transform.as_list()) == transform


def test_a_marked_pixel_lands_where_the_transform_says():
    """Pixel-centre convention: a bright pixel at a landmark is found at the landmark's crop position."""
    image = np.zeros((400, 300, 3), np.uint8)
    marked = np.array([[137.0, 211.0]])
    image[211, 137] = 255
    transform = CropTransform(x0=37.0, y0=111.0, scale=1.0)  # integer shift, no resampling blur
    crop = extract_crop(image, transform, (220, 180))
    row, col = np.unravel_index(np.argmax(crop[..., 0]), crop.shape[:2])
    assert (col, row) == tuple(transform.to_crop(marked)[0].round().astype(int))
    zoomed = CropTransform(x0=97.0, y0=161.0, scale=2.0)  # the pixel becomes a 2x2 block at (80.5, 100.5)
    crop = extract_crop(image, zoomed, (220, 180))
    centre = np.argwhere(crop[..., 0] == crop[..., 0].max()).mean(axis=0)[::-1]
    assert centre == pytest.approx(zoomed.to_crop(marked)[0], abs=0.51)


def test_frames_beyond_the_photo_are_edge_padded():
    image = np.zeros((50, 50, 3), np.uint8)
    image[:, :25] = 200
    crop = extract_crop(image, CropTransform(x0=-100.0, y0=-100.0, scale=1.0), (220, 180))
    assert crop.shape == (220, 180, 3)
    assert (crop[:, :100] == 200).all()  # the left border column repeated
    assert (crop[:100, 140:] == 0).all()  # the right border repeated upwards


def test_frame_entirely_outside_the_photo_is_an_error():
    with pytest.raises(ValueError, match="outside the image"):
        extract_crop(np.zeros((10, 10, 3), np.uint8), CropTransform(1000.0, 1000.0, 1.0), (20, 20))


def test_degenerate_landmarks_are_an_error():
    landmarks = synthetic_landmarks(inner_eye_distance=0.0)
    with pytest.raises(ValueError, match="degenerate"):
        frame_for(landmarks, (220, 180), 5.0)


def test_mask_is_the_jaw_closed_at_eyebrow_height():
    landmarks = synthetic_landmarks()
    polygon = face_polygon(landmarks)
    assert len(polygon) == 19
    assert tuple(polygon[0]) == (landmarks[0, 0], landmarks[19, 1])
    assert tuple(polygon[-1]) == (landmarks[16, 0], landmarks[24, 1])
    mask = face_mask(landmarks, (240, 200))
    assert mask[130, 100]  # inside: below the eyes, above the chin
    assert not mask[90, 100]  # above eyebrow height: forehead stays visible
    assert not mask[130, 50]  # left of the jaw
    top = np.argwhere(mask.any(axis=1))[0, 0]
    assert abs(top - landmarks[19, 1]) <= 1


def test_select_face_prefers_large_and_central():
    boxes = np.array([[0, 0, 60, 60], [170, 120, 230, 180], [0, 0, 20, 20]], float)
    assert select_face(boxes, 400, 300) == 1  # same size, the central one wins
    boxes = np.array([[180, 130, 220, 170], [0, 0, 150, 150]], float)
    assert select_face(boxes, 400, 300) == 1  # much larger beats slightly more central
