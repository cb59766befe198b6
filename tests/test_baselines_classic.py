"""Blurring and pixelation: exact definitions, untouched background, settings from params."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d

from baselines.classic import Blur, Pixelate, blur_inside, opencv_sigma, pixelate_inside
from baselines.interface import RunContext, create
from baselines.settings import BlurConfig, PixelateConfig
from facedata.framing import face_mask
from facedata.prepared import PreparedDataset
from infra.errors import ParamsError
from pipelines import config
from tests.helpers import make_batch, params, params_mapping


def random_faces(n: int = 3, size: tuple[int, int] = (220, 180), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noise images with ellipse masks of different sizes and positions (one touching the border)."""
    rng = np.random.default_rng(seed)
    height, width = size
    images = rng.integers(0, 256, (n, height, width, 3), dtype=np.uint8)
    rows, cols = np.mgrid[:height, :width]
    centres = [(110, 90, 60, 45), (70, 40, 50, 40), (200, 170, 30, 25)]
    masks = np.stack([((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 <= 1 for cy, cx, ry, rx in centres[:n]])
    return images, masks


def reference_blur(image: np.ndarray, kernel_size: int, sigma: float) -> np.ndarray:
    """scipy's Gaussian filter with the same taps; 'mirror' is OpenCV's BORDER_REFLECT_101."""
    radius = kernel_size // 2
    blurred = image.astype(np.float64)
    for axis in (0, 1):
        blurred = gaussian_filter1d(blurred, sigma, axis=axis, mode="mirror", truncate=radius / sigma)
    return np.clip(np.rint(blurred), 0, 255).astype(np.uint8)


def test_opencv_sigma_rule():
    assert opencv_sigma(101) == pytest.approx(15.5)
    assert opencv_sigma(3) == pytest.approx(0.8)


def test_blur_changes_only_the_mask_and_matches_a_reference():
    images, masks = random_faces()
    out = blur_inside(images, masks, 101, opencv_sigma(101))
    assert out.dtype == np.uint8 and out.shape == images.shape
    assert np.array_equal(out[~masks], images[~masks])
    for image, mask, result in zip(images, masks, out, strict=True):
        reference = reference_blur(image, 101, opencv_sigma(101))
        # float32 convolution vs float64: a value at .5 may round either way.
        assert np.abs(result[mask].astype(int) - reference[mask]).max() <= 1
        assert result[mask].std() < image[mask].std() / 5  # noise is smoothed away


def test_mask_box_pixelation_cells_are_constant_and_background_untouched():
    images, masks = random_faces()
    cells = 10
    out = pixelate_inside(images, masks, cells, grid="mask_box", colour="mean")
    assert np.array_equal(out[~masks], images[~masks])
    for image, mask, result in zip(images, masks, out, strict=True):
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        row_edges = top + np.ceil(np.arange(cells + 1) * (bottom - top) / cells).astype(int)
        col_edges = left + np.ceil(np.arange(cells + 1) * (right - left) / cells).astype(int)
        used = 0
        for r0, r1 in zip(row_edges, row_edges[1:], strict=False):
            for c0, c1 in zip(col_edges, col_edges[1:], strict=False):
                inside = mask[r0:r1, c0:c1]
                if not inside.any():
                    continue
                used += 1
                expected = np.rint(image[r0:r1, c0:c1].reshape(-1, 3).mean(0)).astype(np.uint8)
                assert (result[r0:r1, c0:c1][inside] == expected).all()
        assert used > cells  # more than one row of cells holds face pixels
        assert len(np.unique(result[mask], axis=0)) <= cells * cells


def test_default_pixelation_is_resizing_the_crop_to_10_x_10_and_back_inside_the_mask():
    import cv2  # opencv-python comes with face-alignment

    def resized(image, interpolation):
        small = cv2.resize(image, (10, 10), interpolation=interpolation)
        return cv2.resize(small, (180, 220), interpolation=cv2.INTER_NEAREST)

    images, masks = random_faces()
    out = pixelate_inside(images, masks, 10)
    assert np.array_equal(out[~masks], images[~masks])
    for image, mask, result in zip(images, masks, out, strict=True):
        # cv2's INTER_LINEAR rounds in fixed point: one grey level apart at most.
        assert np.abs(result[mask].astype(int) - resized(image, cv2.INTER_LINEAR)[mask]).max() <= 1
        assert np.array_equal(pixelate_inside(image[None], mask[None], 10, colour="mean")[0][mask],
                              resized(image, cv2.INTER_AREA)[mask])  # the cell mean is area averaging, exactly
        # On 22 x 18 cells the bilinear centre sample is the mean of the central 2 x 2 pixels.
        centre = image[10:12, 8:10].reshape(-1, 3).mean(0)
        if mask[0, 0]:
            assert np.array_equal(result[0, 0], np.rint(centre).astype(np.uint8))
    nearest = pixelate_inside(images, masks, 10, colour="nearest")
    rows, cols = np.arange(220) // 22 * 22 + 11, np.arange(180) // 18 * 18 + 9
    for image, mask, result in zip(images, masks, nearest, strict=True):
        assert np.array_equal(result[mask], image[rows[:, None], cols[None, :]][mask])


def test_empty_mask_leaves_the_image_alone():
    images, masks = random_faces(1)
    empty = np.zeros_like(masks)
    for grid in ("crop", "mask_box"):
        assert np.array_equal(pixelate_inside(images, empty, 10, grid), images)
    assert np.array_equal(blur_inside(images, empty, 101, 15.5), images)


def test_kernel_larger_than_the_image_is_refused():
    images, masks = random_faces(1, size=(40, 40))
    with pytest.raises(ValueError, match="blur kernel 101 needs image sides larger than 50, got 40"):
        blur_inside(images, masks, 101, 15.5)


def test_settings_come_from_params():
    mapping = params_mapping()
    mapping["anonymisers"]["blur"]["kernel_size"] = 31
    mapping["anonymisers"]["pixelate"].update(cells=4, grid="mask_box", colour="mean")
    settings = config.from_mapping(mapping)
    blur = create("blur", settings.anonymiser_settings("blur"), RunContext(method="blur", dataset="celeba"))
    pixelate = create("pixelate", settings.anonymiser_settings("pixelate"),
                      RunContext(method="pixelate", dataset="celeba"))
    assert isinstance(blur, Blur) and blur.kernel_size == 31 and blur.sigma == pytest.approx(opencv_sigma(31))
    assert isinstance(pixelate, Pixelate)
    assert (pixelate.cells, pixelate.grid, pixelate.colour) == (4, "mask_box", "mean")

    images, masks = random_faces(1)
    batch = make_batch(images, masks)
    assert np.array_equal(pixelate.anonymise(batch), pixelate_inside(images, masks, 4, "mask_box", "mean"))
    assert np.array_equal(blur.anonymise(batch), blur_inside(images, masks, 31, opencv_sigma(31)))


def test_paper_defaults_and_bad_params():
    settings = params()
    assert settings.anonymisers["blur"] == BlurConfig() and BlurConfig().kernel_size == 101
    assert settings.anonymisers["pixelate"] == PixelateConfig() == PixelateConfig(10, "crop", "linear")
    for section, key, value, message in (("blur", "kernel_size", 100, "anonymisers.blur.kernel_size must be odd"),
                                         ("pixelate", "cells", 0, "anonymisers.pixelate.cells must be >= 1"),
                                         ("pixelate", "grid", "face", "anonymisers.pixelate.grid must be one of")):
        mapping = params_mapping()
        mapping["anonymisers"][section][key] = value
        with pytest.raises(ParamsError, match=message):
            config.from_mapping(mapping)


@pytest.mark.realdata
def test_real_faces(prepared_celeba):
    prepared = PreparedDataset(prepared_celeba)
    keys = list(prepared.ok["key"][:4])
    images = np.stack([prepared.crop(key) for key in keys])
    masks = np.stack([prepared.mask(key) for key in keys])
    # The stored mask is the SPEC polygon of the stored landmarks.
    assert np.array_equal(masks[0], face_mask(prepared.landmarks(keys[0]), masks.shape[1:]))
    for out in (blur_inside(images, masks, 101, 15.5), pixelate_inside(images, masks, 10)):
        assert np.array_equal(out[~masks], images[~masks])
        assert np.abs(out[masks].astype(int) - images[masks]).mean() > 5  # the face really changed
