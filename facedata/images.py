"""Robust image decoding: every failure becomes an `ImageError` with a short status code.

Conventions: images are returned as uint8 RGB arrays (H, W, 3), upright per EXIF.
Greyscale, palette, CMYK and 16-bit inputs are converted; alpha is composited on white.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from contextlib import contextmanager
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


#: Images the suite reads back are crops: one larger than this is refused before it is decoded.
READ_MAX_PIXELS = 40_000_000


@contextmanager
def _explicit_pixel_limit() -> Iterator[None]:
    """PIL's decompression-bomb check off: callers apply their own limit, as a status or a one-line error."""
    previous_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous_limit


def read_rgb(path: Path, formats: tuple[str, ...] = (), max_pixels: int = READ_MAX_PIXELS) -> np.ndarray:
    """(H, W, 3) uint8 of an image the suite wrote or reads back (crops, anonymised images).

    Every mode is converted as `decode` converts it (16-bit scaled down, not clipped; alpha on
    white). A DataError naming the file for one that is unreadable, over `max_pixels`, or (when
    `formats` are given, e.g. ("PNG",)) of another format, whatever its name says.
    """
    with _explicit_pixel_limit():
        try:
            image = open_header(path, max_pixels, "the limit on images read back")
        except ImageError as error:
            raise DataError(f"{path}: not a readable image ({error})") from error
        with image:
            if formats and image.format not in formats:
                raise DataError(f"{path} is a {image.format} file, not {' or '.join(formats)}")
            try:
                image.load()
                return _to_rgb(image)
            except (OSError, SyntaxError, ValueError) as error:
                raise DataError(f"{path}: not a readable image ({error})") from error


def open_header(path: Path, max_pixels: int, setting: str = "prepare.max_pixels") -> Image.Image:
    """Open an image lazily and check its size; raises ImageError for empty, unreadable or huge files.

    PIL's decompression-bomb check is replaced by the explicit `max_pixels` limit, which is
    applied here, before any pixel is decoded; `setting` is its name in messages.
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
        raise ImageError("too_large", f"{width}x{height} exceeds {setting}={max_pixels}")
    return image


def decode(path: Path, max_side: int | None, max_pixels: int) -> DecodedImage:
    """Decode `path` as RGB, downscaled so its longer side is at most `max_side` (None: full size).

    JPEGs are decoded directly at 1/2, 1/4 or 1/8 scale where that suffices (libjpeg's DCT
    scaling), so a 5000-px photo costs a fraction of a full decode.
    """
    with _explicit_pixel_limit():
        image = open_header(path, max_pixels)
        return _decode_opened(image, path, max_side)


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


#: File suffix of each anonymise.image_format.
IMAGE_SUFFIX = {"png": ".png", "jpeg75": ".jpg"}


def image_file(pair_id: int, image_format: str) -> str:
    """The file name of a pair's anonymised image: `<pair_id>.png`, or `.jpg` for `jpeg75`."""
    return f"{int(pair_id)}{IMAGE_SUFFIX[image_format]}"


def encoded(array: np.ndarray, image_format: str) -> bytes:
    """A uint8 image as PNG bytes, or as the AnonyGAN authors' files: PIL's JPEG defaults (quality 75, 4:2:0)."""
    if image_format == "png":
        return png_bytes(array)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=75, subsampling="4:2:0")
    return buffer.getvalue()


def png_bytes(array: np.ndarray) -> bytes:
    """A uint8 image as PNG bytes (lossless; fast compression: crops are written once and read often)."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
