"""Bad and unusual photos through the real prepare stage: each gets a recorded status, none crashes it."""

from __future__ import annotations

import io
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from facedata import prepare_engine
from facedata.crops import PrepareConfig, prepare_face
from facedata.landmarks import LandmarkDetector
from infra.errors import DataError
from pipelines import prepare
from pipelines.config import from_mapping
from pipelines.layout import Layout

pytestmark = pytest.mark.realdata
FACE = "img_align_celeba/003039.jpg"


def save(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def face(celeba_aligned_root) -> Image.Image:
    return Image.open(celeba_aligned_root / FACE).convert("RGB")


@pytest.fixture(scope="module")
def reference(face):
    """Landmarks of the unmodified face, to check that conversions and rescaling keep them."""
    return prepare_face_from(face)


def prepare_face_from(image: Image.Image, name: str = "x.png"):
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        image.save(path)
        return prepare_face(path, PrepareConfig(), LandmarkDetector())


def odd_photos(face: Image.Image) -> dict[str, bytes]:
    """File name -> bytes, named by what each one tests. Names end in .jpg as CelebA's do."""
    rgb = np.asarray(face)
    sixteen = np.asarray(face.convert("L"), dtype=np.uint16) * 257
    rgba = face.convert("RGBA")
    rgba.putalpha(200)
    huge = Image.new("RGB", (10_000, 7_000), (120, 130, 140))
    huge.paste(face.resize((face.width * 12, face.height * 12), Image.Resampling.BICUBIC), (4_000, 2_000))
    two = Image.new("RGB", (face.width * 3, face.height), (128, 128, 128))
    two.paste(face, (0, 0))
    two.paste(face.resize((int(face.width * 0.8), int(face.height * 0.8))), (face.width * 2, 20))
    good = save(face, format="JPEG", quality=95)
    return {
        "good.jpg": good,
        "cmyk.jpg": save(face.convert("CMYK"), format="JPEG", quality=95),
        "grey.jpg": save(face.convert("L"), format="JPEG", quality=95),
        "alpha.jpg": save(rgba, format="PNG"),
        "sixteen_bit.jpg": save(Image.fromarray(sixteen), format="PNG"),
        "palette.jpg": save(face.convert("P"), format="PNG"),
        "huge.jpg": save(huge, format="JPEG", quality=90),
        "two_faces.jpg": save(two, format="JPEG", quality=95),
        "no_face.jpg": save(Image.fromarray(np.full_like(rgb, 127)), format="JPEG"),
        "zero_bytes.jpg": b"",
        "truncated.jpg": good[: len(good) // 2],
        "corrupt.jpg": b"\xff\xd8\xff\xe0 this is not really a jpeg" + bytes(range(256)) * 4,
        "text.jpg": b"hello, I am a text file",
        "one_pixel.jpg": save(Image.new("RGB", (1, 1), (90, 90, 90)), format="PNG"),
        "sliver.jpg": save(Image.new("RGB", (60_000, 2), (90, 90, 90)), format="PNG"),
    }


@pytest.fixture(scope="module")
def prepared(face, tmp_path_factory):
    root = tmp_path_factory.mktemp("odd")
    folder = root / "img_align_celeba"
    folder.mkdir()
    photos = odd_photos(face)
    for name, data in photos.items():
        (folder / name).write_bytes(data)
    listed = [*photos, "missing.jpg"]
    (root / "identity_CelebA.txt").write_text("".join(f"{name} 1\n" for name in listed))
    layout = Layout(root)
    layout.raw("celeba").mkdir(parents=True)
    write_source(layout)
    params = from_mapping({"data": {"celeba": {"identity_list": "derived", "min_images_per_identity": 1}},
                          "prepare": {"workers": 2}})
    summary = prepare.run(params, layout, "celeba")
    index = pd.read_parquet(layout.prepared("celeba") / "index.parquet").set_index("key")
    return index, summary, layout, params


def write_source(layout: Layout) -> None:
    """download@celeba's record of the photos and identity file in the layout's root."""
    layout.source("celeba").write_text(json.dumps({"images_dir": str(layout.root / "img_align_celeba"),
                                                   "identity_file": str(layout.root / "identity_CelebA.txt")}))


@pytest.fixture
def own_copy(prepared, tmp_path):
    """(index, layout, params) of a copy of the prepared photos, for a test that changes them or re-runs the stage.

    The module's copy stays as the first run left it, whichever test runs first.
    """
    index, _, layout, params = prepared
    copy = Layout(shutil.copytree(layout.root, tmp_path / "odd"))
    write_source(copy)
    return index, copy, params


@pytest.mark.parametrize(
    "name, status",
    [
        ("good.jpg", "ok"),
        ("cmyk.jpg", "ok"),
        ("grey.jpg", "ok"),
        ("alpha.jpg", "ok"),
        ("sixteen_bit.jpg", "ok"),
        ("palette.jpg", "ok"),
        ("huge.jpg", "ok"),
        ("two_faces.jpg", "ok"),
        ("no_face.jpg", "no_face"),
        ("zero_bytes.jpg", "unreadable"),
        ("truncated.jpg", "unreadable"),
        ("corrupt.jpg", "unreadable"),
        ("text.jpg", "unreadable"),
        ("missing.jpg", "missing"),
        ("one_pixel.jpg", "too_small"),
        ("sliver.jpg", "too_small"),
    ],
)
def test_each_photo_gets_its_status(prepared, name, status):
    index, *_ = prepared
    assert index.at[name, "status"] == status, index.at[name, "detail"]
    if status != "ok":
        assert index.at[name, "detail"], "a failure must say why"


def test_summary_counts_every_photo(prepared):
    index, summary, *_ = prepared
    assert summary["photos"] == len(index) == 16
    assert summary["status"] == {"ok": 8, "no_face": 1, "unreadable": 4, "missing": 1, "too_small": 2}


def test_conversions_keep_the_landmarks(prepared, reference):
    index, _, layout, _ = prepared
    for name in ("good.jpg", "cmyk.jpg", "grey.jpg", "alpha.jpg", "sixteen_bit.jpg"):
        landmarks = np.asarray(index.at[name, "landmarks"]).reshape(68, 2)
        assert np.abs(landmarks - reference.landmarks).mean() < 1.5, name
        assert (layout.prepared("celeba") / "crops" / f"{name}.png").is_file()


def test_huge_photo_is_detected_small_and_mapped_back(prepared, reference):
    index, *_ = prepared
    row = index.loc["huge.jpg"]
    assert (row["width"], row["height"]) == (10_000, 7_000)
    # The face was pasted 12x enlarged at (4000, 2000): landmarks map back to the photo's coordinates.
    expected = (reference.landmarks_image + 0.5) * 12 - 0.5 + (4_000, 2_000)
    found = np.asarray(row["landmarks_image"]).reshape(68, 2)
    inter_ocular = np.linalg.norm(expected[45] - expected[36])
    assert np.abs(found - expected).mean() / inter_ocular < 0.03
    # In the crop, the face sits where the unscaled face does.
    assert np.abs(np.asarray(row["landmarks"]).reshape(68, 2) - reference.landmarks).mean() < 2.0


def test_several_faces_keep_the_largest_most_central(prepared, reference):
    index, summary, *_ = prepared
    row = index.loc["two_faces.jpg"]
    assert row["n_faces"] == 2 and summary["several_faces"] >= 1
    assert np.asarray(row["box"])[0] < reference.image_size[0]  # the full-size face on the left


def test_too_large_photo_is_refused_before_decoding(face, tmp_path):
    path = tmp_path / "big.png"
    face.save(path)
    with pytest.raises(Exception) as error:
        prepare_face(path, PrepareConfig(max_pixels=10_000), LandmarkDetector())
    assert getattr(error.value, "status", None) == "too_large"


def test_rerun_processes_only_new_or_changed_photos(own_copy, face):
    index, layout, params = own_copy
    folder = layout.root / "img_align_celeba"
    (folder / "good.jpg").write_bytes(save(face.transpose(Image.Transpose.FLIP_LEFT_RIGHT), format="JPEG"))
    summary = prepare.run(params, layout, "celeba")
    assert summary["processed"] == 2  # the changed photo, and the missing one (its absence is re-checked)
    assert summary["reused"] == len(index) - 2
    rerun = pd.read_parquet(layout.prepared("celeba") / "index.parquet").set_index("key")
    assert rerun.at["good.jpg", "sha1"] != index.at["good.jpg", "sha1"]
    assert rerun.drop(index="good.jpg")["sha1"].equals(index.drop(index="good.jpg")["sha1"])


def test_changed_settings_reprocess_everything(own_copy):
    _, layout, params = own_copy
    changed = replace(params, prepare=replace(params.prepare, eye_scale=4.0))
    summary = prepare.run(changed, layout, "celeba")
    assert summary["reused"] == 0 and summary["processed"] == summary["photos"]


def test_a_bug_on_every_photo_stops_the_stage_and_is_never_cached(own_copy, monkeypatch):
    _, layout, params = own_copy
    changed = replace(params, prepare=replace(params.prepare, eye_scale=4.5, workers=1))  # fresh rows

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug, not a bad photo")

    monkeypatch.setattr(prepare_engine, "prepare_face", broken)
    with pytest.raises(DataError, match=r"failed with an unexpected error \(.*\), e.g. .*ZeroDivisionError"):
        prepare.run(changed, layout, "celeba")
    monkeypatch.undo()
    summary = prepare.run(changed, layout, "celeba")
    assert "error" not in summary["status"] and summary["status"]["ok"] == 8
