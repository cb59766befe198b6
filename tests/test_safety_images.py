"""Images are read with the right scaling or refused in one line; the folder method takes only what it documents.

Every hostile image is made here: 16-bit grey and 16-bit RGB PNGs (the latter written byte by byte, as
Pillow cannot), palette, grey-with-alpha and CMYK images, a JPEG named .png, a link leading out of the
method's folder, and a PNG whose header claims 20000x20000 pixels.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from baselines.folder import FolderAnonymiser
from facedata.images import read_rgb
from infra.errors import DataError
from tests.helpers import make_batch

HEIGHT, WIDTH = 22, 18


def png_bytes(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes) -> bytes:
    """A PNG file of raw scanlines (each prefixed by filter type 0)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def rgb16_png(path: Path, values: np.ndarray) -> None:
    """A 48-bit RGB PNG of (H, W, 3) uint16 values."""
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in values)
    path.write_bytes(png_bytes(values.shape[1], values.shape[0], 16, 2, rows))


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    grey = np.linspace(0, 65535, HEIGHT * WIDTH).astype(np.uint16).reshape(HEIGHT, WIDTH)
    Image.fromarray(grey).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode == "I;16"
    read = read_rgb(tmp_path / "grey16.png")
    expected = np.round(grey / 65535 * 255).astype(np.uint8)
    assert read.dtype == np.uint8 and np.array_equal(read[..., 0], expected) and np.array_equal(read[..., 2], expected)
    assert read.min() == 0 and read.max() == 255 and len(np.unique(read)) > 200  # not a white face
    colour = np.stack([grey, 65535 - grey, np.full_like(grey, 32768)], axis=-1)
    rgb16_png(tmp_path / "rgb16.png", colour)
    assert np.abs(read_rgb(tmp_path / "rgb16.png").astype(int) - colour / 257).max() <= 1


def test_palette_alpha_and_cmyk_images_are_converted(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    Image.fromarray(rgb).quantize(16).save(tmp_path / "palette.png")
    palette = Image.open(tmp_path / "palette.png")
    assert palette.mode == "P" and np.array_equal(read_rgb(tmp_path / "palette.png"),
                                                  np.asarray(palette.convert("RGB")))
    Image.new("LA", (WIDTH, HEIGHT), (40, 0)).save(tmp_path / "la.png")  # fully transparent grey: white
    assert (read_rgb(tmp_path / "la.png") == 255).all()
    Image.new("LA", (WIDTH, HEIGHT), (40, 255)).save(tmp_path / "la_opaque.png")
    assert (read_rgb(tmp_path / "la_opaque.png") == 40).all()
    Image.new("CMYK", (WIDTH, HEIGHT), (0, 255, 0, 0)).save(tmp_path / "cmyk.tif")  # magenta ink
    assert read_rgb(tmp_path / "cmyk.tif")[0, 0].tolist() == [255, 0, 255]


def test_an_image_over_the_pixel_limit_is_one_line_without_decoding(tmp_path):
    huge = tmp_path / "huge.png"
    huge.write_bytes(png_bytes(20000, 20000, 8, 0, b"\x00"))  # the header claims 400 M pixels
    with pytest.raises(DataError, match=r"huge\.png: not a readable image \(too_large: 20000x20000 exceeds the limit"):
        read_rgb(huge)


def test_the_folder_method_accepts_only_lossless_pngs_inside_its_folder(tmp_path):
    batch = make_batch(np.zeros((1, HEIGHT, WIDTH, 3), np.uint8), np.zeros((1, HEIGHT, WIDTH), bool))
    folder = tmp_path / "method"
    folder.mkdir()
    grey = np.full((HEIGHT, WIDTH), 30000, np.uint16)
    Image.fromarray(grey).save(folder / "0.png")  # 16-bit output of a third-party method
    assert (FolderAnonymiser(folder).anonymise(batch) == round(30000 / 65535 * 255)).all()
    Image.fromarray(np.zeros((HEIGHT, WIDTH, 3), np.uint8)).save(folder / "0.png", format="JPEG")
    with pytest.raises(DataError, match=r"0\.png is a JPEG file, not PNG"):
        FolderAnonymiser(folder).anonymise(batch)
    outside = tmp_path / "secret.png"
    Image.fromarray(np.zeros((HEIGHT, WIDTH, 3), np.uint8)).save(outside)
    (folder / "0.png").unlink()
    (folder / "0.png").symlink_to(outside)
    with pytest.raises(DataError, match=rf"0\.png leads to {outside}, outside {folder}"):
        FolderAnonymiser(folder).anonymise(batch)
