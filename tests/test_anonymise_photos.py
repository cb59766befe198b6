"""`python -m pipelines.anonymise_photos`: every face of every photo anonymised and pasted back, one CSV row each."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from facedata.crops import PrepareConfig
from facedata.images import decode
from facedata.landmarks import LandmarkDetector
from facedata.photo_faces import find_boxes, frame_faces
from infra.pool import imap_unordered
from pipelines import anonymise_photos, config
from pipelines.layout import Layout
from tests.helpers import REPO, deadline

PARAMS = REPO / "params.yaml"
#: In-the-wild CelebA mini photos: two faces (1063x1600), one face at 3288x5124, no face dlib finds.
TWO_FACES, LARGEST, NO_FACE = "045947.jpg", "187150.jpg", "000093.jpg"


def run(in_dir: Path, out_dir: Path, *options: str) -> pd.DataFrame:
    anonymise_photos.main([str(in_dir), str(out_dir), "--params", str(PARAMS), *options])
    report = pd.read_csv(out_dir / anonymise_photos.REPORT, keep_default_na=False)
    return report.set_index("path")


def lfw_as_png(lfw_root: Path, folder: Path, count: int) -> list[str]:
    """The first `count` LFW photos of one person, as PNGs (lossless: the output can be compared bit for bit)."""
    folder.mkdir(parents=True)
    names = []
    for path in sorted((lfw_root / "lfw-deepfunneled" / "Aaron_Peirsol").glob("*.jpg"))[:count]:
        Image.open(path).save(folder / f"{path.stem}.png")
        names.append(f"{path.stem}.png")
    return names


def one_line_error(capsys, call) -> str:
    with pytest.raises(SystemExit) as stopped:
        call()
    assert stopped.value.code == 2
    message = capsys.readouterr().err.strip()
    assert message.startswith("anonymise_photos: ") and "\n" not in message
    return message


@pytest.mark.realdata
def test_blur_changes_only_the_faces_of_lfw_photos(lfw_root, tmp_path):
    names = lfw_as_png(lfw_root, tmp_path / "in", 3)
    report = run(tmp_path / "in", tmp_path / "out", "--method", "blur")
    prepare = PrepareConfig()
    detector = LandmarkDetector(prepare.detect_upsample, prepare.fallback_detector).load()
    for name in names:
        assert report.loc[name, ["faces_found", "anonymised", "failed", "status"]].tolist() == [1, 1, 0, "ok"]
        before = decode(tmp_path / "in" / name, None, prepare.max_pixels).pixels
        after = np.asarray(Image.open(tmp_path / "out" / name))
        [face], _ = frame_faces(before.copy(), find_boxes(tmp_path / "in" / name, prepare, detector), prepare,
                                detector)
        (left, top), (right, bottom) = face.transform.to_image(np.array([[-1.0, -1.0], [180.0, 220.0]]))
        outside = np.ones(before.shape[:2], bool)
        outside[max(0, int(top)) : int(bottom) + 1, max(0, int(left)) : int(right) + 1] = False
        assert outside.any() and (after[outside] == before[outside]).all(), name
        face_region = ~outside
        assert np.abs(after[face_region].astype(int) - before[face_region]).mean() > 3, name


@pytest.mark.realdata
def test_in_the_wild_photos_every_face_and_every_failure_a_row(celeba_wild_root, tmp_path):
    (tmp_path / "in" / "nested").mkdir(parents=True)
    for name in (TWO_FACES, LARGEST, NO_FACE):
        shutil.copy(celeba_wild_root / "img_celeba" / name, tmp_path / "in" / "nested" / name)
    (tmp_path / "in" / "broken.jpg").write_bytes(b"not a JPEG at all")
    (tmp_path / "in" / "notes.txt").write_text("not a photo: ignored")
    report = run(tmp_path / "in", tmp_path / "out", "--method", "pixelate", "--device", "cpu")
    assert sorted(report.index) == sorted(["broken.jpg", *(f"nested/{name}" for name in (TWO_FACES, LARGEST, NO_FACE))])
    several = report.loc[f"nested/{TWO_FACES}"]
    assert several["faces_found"] >= 2 and several["anonymised"] == several["faces_found"]
    assert report.loc[f"nested/{LARGEST}", ["anonymised", "status"]].tolist() == [1, "ok"]
    largest = Image.open(tmp_path / "out" / "nested" / LARGEST)
    assert largest.format == "JPEG" and largest.size == Image.open(celeba_wild_root / "img_celeba" / LARGEST).size
    assert report.loc[f"nested/{NO_FACE}", "status"] == "no_face"
    assert report.loc["broken.jpg", "status"] == "unreadable" and report.loc["broken.jpg", "reason"]
    assert not (tmp_path / "out" / "broken.jpg").exists() and not (tmp_path / "out" / "nested" / NO_FACE).exists()


@pytest.mark.realdata
def test_a_photo_over_the_pixel_limit_is_a_row(celeba_wild_root, tmp_path):
    (tmp_path / "in").mkdir()
    shutil.copy(celeba_wild_root / "img_celeba" / TWO_FACES, tmp_path / "in" / TWO_FACES)
    params = config.load(PARAMS)
    params = dataclasses.replace(params, prepare=dataclasses.replace(params.prepare, max_pixels=1_000_000))
    report = anonymise_photos.anonymise_folder(tmp_path / "in", tmp_path / "out", params, Layout(REPO),
                                               anonymise_photos.PhotoOptions("blur"))
    assert report.set_index("path").loc[TWO_FACES, "status"] == "too_large"


@pytest.mark.realdata
def test_an_existing_output_is_kept_unless_overwrite(lfw_root, tmp_path):
    [name] = lfw_as_png(lfw_root, tmp_path / "in", 1)
    run(tmp_path / "in", tmp_path / "out", "--method", "blur")
    output = tmp_path / "out" / name
    output.write_bytes(b"the user's own file")
    report = run(tmp_path / "in", tmp_path / "out", "--method", "blur")
    assert report.loc[name, "status"] == "exists" and output.read_bytes() == b"the user's own file"
    report = run(tmp_path / "in", tmp_path / "out", "--method", "blur", "--overwrite", "--hard-edge")
    assert report.loc[name, "status"] == "ok" and Image.open(output).size == (250, 250)


@pytest.mark.parametrize("out", ["in", "in/sub", "."])
def test_never_writes_into_the_input_folder(tmp_path, capsys, out):
    (tmp_path / "in").mkdir()
    Image.new("RGB", (64, 64)).save(tmp_path / "in" / "a.png")
    message = one_line_error(capsys, lambda: anonymise_photos.main(
        [str(tmp_path / "in"), str(tmp_path / out), "--method", "blur", "--params", str(PARAMS)]))
    assert "outside IN_DIR" in message
    assert sorted(path.name for path in (tmp_path / "in").rglob("*")) == ["a.png"]


def test_a_method_that_needs_conditions_errors_clearly(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    arguments = [str(tmp_path / "in"), str(tmp_path / "out"), "--method", "anonygan-68", "--params", str(PARAMS)]
    assert "--conditions" in one_line_error(capsys, lambda: anonymise_photos.main(arguments))
    assert not (tmp_path / "out").exists()


@pytest.mark.realdata
def test_anonygan_with_conditions_but_no_checkpoint_errors_clearly(lfw_root, tmp_path, capsys):
    lfw_as_png(lfw_root, tmp_path / "in", 1)
    lfw_as_png(lfw_root, tmp_path / "conditions", 1)
    params = tmp_path / "repo" / "params.yaml"  # models/ beside it holds no checkpoint
    params.parent.mkdir()
    shutil.copy(PARAMS, params)
    message = one_line_error(capsys, lambda: anonymise_photos.main(
        [str(tmp_path / "in"), str(tmp_path / "out"), "--method", "anonygan-68", "--params", str(params),
         "--conditions", str(tmp_path / "conditions")]))
    assert "checkpoint.pt not found" in message


@pytest.mark.realdata
def test_a_photo_with_a_face_that_cannot_be_framed_is_not_written(lfw_root, tmp_path, monkeypatch):
    [name] = lfw_as_png(lfw_root, tmp_path / "in", 1)
    monkeypatch.setattr(anonymise_photos, "frame_faces", lambda *args: ([], ["inner eye corners 0.00 px apart"]))
    report = run(tmp_path / "in", tmp_path / "out", "--method", "blur")
    assert report.loc[name, ["faces_found", "anonymised", "failed", "status"]].tolist() == [1, 0, 1, "failed"]
    assert "0.00 px apart" in report.loc[name, "reason"] and not (tmp_path / "out" / name).exists()


@pytest.mark.realdata
def test_ciagan_anonymises_every_face_of_a_photo(celeba_wild_root, tmp_path):
    """A tiny random CIAGAN anonymises both faces of a two-face photo (its identity rule numbers every face)."""
    from baselines.ciagan.config import CiaganModelConfig, CiaganTrainConfig
    from baselines.ciagan.training import CiaganTrainer

    (tmp_path / "in").mkdir()
    name = "184568.jpg"  # two faces, 650x979
    shutil.copy(celeba_wild_root / "img_celeba" / name, tmp_path / "in" / name)
    layout = Layout(tmp_path / "repo")
    layout.root.mkdir()
    shutil.copy(PARAMS, layout.params_file)
    tiny = CiaganModelConfig(identities=3, image_size=32, generator_width=8, identity_width=16, discriminator_width=8)
    CiaganTrainer(tiny, CiaganTrainConfig(batch_size=2), checkpoint=layout.checkpoint("ciagan"),
                  identities=["a", "b", "c"]).save()
    anonymise_photos.main([str(tmp_path / "in"), str(tmp_path / "out"), "--method", "ciagan", "--device", "cpu",
                           "--params", str(layout.params_file)])
    report = pd.read_csv(tmp_path / "out" / anonymise_photos.REPORT).set_index("path")
    assert report.loc[name, ["faces_found", "anonymised", "status"]].tolist() == [2, 2, "ok"]
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "out" / name)),
                              np.asarray(Image.open(tmp_path / "in" / name)))


def cnn_faces(side: int) -> int:
    """Faces dlib's CNN finds in a grey square (none), run in a worker process."""
    return len(LandmarkDetector(1, "cnn").load().detect_cnn(np.full((side, side, 3), 128, np.uint8)))


def test_the_cnn_fallback_runs_in_workers_so_this_process_can_still_fork_them(tmp_path):
    (tmp_path / "in").mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (100, 120), (128, 128, 128)).save(tmp_path / "in" / name)
    report = run(tmp_path / "in", tmp_path / "out", "--method", "blur")
    assert (report["status"] == "no_face").all() and "HOG and CNN found no face" in report["reason"].iloc[0]
    with deadline(60):  # workers forked from a process that ran dlib's CNN hang in their first CNN call
        assert sorted(faces for _, faces in imap_unordered(cnn_faces, [100, 120], 2)) == [0, 0]
