"""Robust image decoding: every failure becomes an `ImageError` with a short status code.

Conventions: images are returned as uint8 RGB arrays (H, W, 3), upright per EXIF.
Greyscale, palette, CMYK and 16-bit inputs are converted; alpha is composited on white.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from infra.errors import DataError


class ImageError(Exception):
    """An image that cannot be used. `status` is a short code recorded in the prepared index."""

    def __init__(self, status: str, detail: str):
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray  # (h, w, 3) uint8
    scale: float  # decoded pixels per original pixel (<= 1)
    original_size: tuple[int, int]  # (width, height) of the upright original


def read_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 of an image the suite wrote or reads back (crops, anonymised images)."""
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (UnidentifiedImageError, OSError) as error:
        raise DataError(f"{path}: not a readable image ({error})") from error


def open_header(path: Path, max_pixels: int) -> Image.Image:
    """Open an image lazily and check its size; raises ImageError for empty, unreadable or huge files.

    PIL's decompression-bomb check is replaced by the explicit `max_pixels` limit, which is
    applied here, before any pixel is decoded.
    """
    if not path.exists():
        raise ImageError("missing", f"{path} does not exist")
    if path.stat().st_size == 0:
        raise ImageError("unreadable", f"{path} is empty (0 bytes)")
    try:
        image = Image.open(path)
    except (UnidentifiedImageError, OSError) as error:
        raise ImageError("unreadable", f"{path.name}: {error}") from error
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError("too_large", f"{width}x{height} exceeds prepare.max_pixels={max_pixels}")
    return image


def decode(path: Path, max_side: int | None, max_pixels: int) -> DecodedImage:
    """Decode `path` as RGB, downscaled so its longer side is at most `max_side` (None: full size).

    JPEGs are decoded directly at 1/2, 1/4 or 1/8 scale where that suffices (libjpeg's DCT
    scaling), so a 5000-px photo costs a fraction of a full decode.
    """
    previous_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        image = open_header(path, max_pixels)
        return _decode_opened(image, path, max_side)
    finally:
        Image.MAX_IMAGE_PIXELS = previous_limit


def _decode_opened(image: Image.Image, path: Path, max_side: int | None) -> DecodedImage:
    try:
        orientation = image.getexif().get(0x0112, 1)
        upright_size = image.size[::-1] if orientation in (5, 6, 7, 8) else image.size
        if max_side is not None and image.format == "JPEG" and max(image.size) > max_side:
            reduce = 2 ** min(3, int(math.log2(max(image.size) / max_side)))
            if reduce > 1:
                image.draft("RGB", (math.ceil(image.size[0] / reduce), math.ceil(image.size[1] / reduce)))
        image.load()
        image = ImageOps.exif_transpose(image)
        pixels = _to_rgb(image)
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageError("unreadable", f"{path.name}: {error}") from error
    rgb = Image.fromarray(pixels)
    if max_side is not None and max(rgb.size) > max_side:
        factor = max_side / max(rgb.size)
        rgb = rgb.resize(
            (max(1, round(rgb.width * factor)), max(1, round(rgb.height * factor))),
            Image.Resampling.BILINEAR,
            reducing_gap=2.0,
        )
    scale = rgb.width / upright_size[0]
    return DecodedImage(np.asarray(rgb), scale, upright_size)


def _to_rgb(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
        grey = np.clip(np.round(array / peak * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if image.mode == "F":
        grey = np.clip(np.round(np.asarray(image, dtype=np.float64)), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    return np.asarray(image.convert("RGB"))
