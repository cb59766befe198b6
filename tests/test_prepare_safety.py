"""The prepare stage on generated inputs: protocol keys are data, odd photos get statuses, leftovers are cleaned.

Photos here hold no face (flat grey), so dlib's HOG detector rejects them in milliseconds.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
from PIL import Image

from facedata import prepare_engine
from facedata.prepared import INDEX_COLUMNS
from pipelines import prepare
from pipelines.layout import Layout
from tests.helpers import busy_cores, deadline, write_params

GREY = Image.new("RGB", (100, 120), (128, 128, 128))


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def celeba_copy(root: Path, photos: dict[str, bytes], identity_file: bytes | None = None, **prepare_settings
                ) -> Layout:
    """A CelebA copy holding `photos` (all of identity 1 unless `identity_file` is given), ready for prepare."""
    folder = root / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    for name, data in photos.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    identities = root / "celeba" / "identity_CelebA.txt"
    identities.write_bytes(identity_file or "".join(f"{name} 1\n" for name in photos).encode())
    layout = Layout(root)
    layout.raw("celeba").mkdir(parents=True)
    layout.source("celeba").write_text(json.dumps({"images_dir": str(folder), "identity_file": str(identities)}))
    write_params(layout, {"data": {"celeba": {"identity_list": "derived", "min_images_per_identity": 1}},
                          "prepare": {"workers": 1, "fallback_detector": None, **prepare_settings}})
    return layout


def stopped(layout: Layout, capsys) -> str:
    """The one line prepare@celeba stops with (exit status 2)."""
    with pytest.raises(SystemExit) as stop:
        prepare.main(["celeba"], layout=layout)
    lines = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("prepare@celeba: ")
    return lines[0]


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("key", ["../../outside/face.jpg", "/abs/face.jpg", "a/../../face.jpg"])
def test_an_identity_key_that_is_a_path_stops_prepare_before_anything_is_written(tmp_path, capsys, key):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "face.jpg").write_bytes(png(GREY))
    layout = celeba_copy(tmp_path / "work", {"a.jpg": png(GREY)}, f"a.jpg 1\n{key} 1\n".encode())
    before = files_under(tmp_path)
    line = stopped(layout, capsys)
    assert f"identity_CelebA.txt:2: file name {key!r}: the key must" in line
    assert files_under(tmp_path) == before


def test_a_pairs_name_that_climbs_out_stops_prepare_naming_the_line(tmp_path, capsys):
    folder = tmp_path / "lfw"
    (folder / "lfw-deepfunneled").mkdir(parents=True)
    (folder / "pairs.txt").write_text("1\t1\nAnn\t1\t2\n..\t1\tBob\t1\n")
    layout = Layout(tmp_path)
    layout.raw("lfw").mkdir(parents=True)
    layout.source("lfw").write_text(json.dumps({"images_dir": str(folder / "lfw-deepfunneled"),
                                                "pairs_file": str(folder / "pairs.txt")}))
    write_params(layout, {})
    with pytest.raises(SystemExit):
        prepare.main(["lfw"], layout=layout)
    line, = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"prepare@lfw: {folder / 'pairs.txt'}:3: name '..'")


def test_keys_differing_only_in_case_stop_prepare_naming_both(tmp_path, capsys):
    layout = celeba_copy(tmp_path, {"case.jpg": png(GREY), "case.JPG": png(GREY), "other.jpg": png(GREY)})
    line = stopped(layout, capsys)
    assert "photos case.JPG and case.jpg differ only in letter case" in line


def test_photos_differing_only_in_extension_get_their_own_crop_names(tmp_path):
    from facedata.prepared import crop_relpath, mask_relpath

    assert crop_relpath("coll.jpg") != crop_relpath("coll.png") and crop_relpath("coll.jpg") == "crops/coll.jpg.png"
    assert mask_relpath("Ann/Ann_0001.jpg") == "masks/Ann/Ann_0001.jpg.png"


def test_a_photo_linking_outside_the_image_folder_is_not_read(tmp_path):
    secret = tmp_path / "elsewhere" / "secret.jpg"
    secret.parent.mkdir()
    secret.write_bytes(png(GREY))
    layout = celeba_copy(tmp_path / "work", {"grey.jpg": png(GREY), "sub/inner.jpg": png(GREY)})
    folder = tmp_path / "work" / "celeba" / "img_align_celeba"
    (folder / "escape.jpg").symlink_to(secret)
    (folder / "inside.jpg").symlink_to(folder / "sub" / "inner.jpg")
    (folder.parent / "identity_CelebA.txt").write_text(
        "grey.jpg 1\nsub/inner.jpg 1\nescape.jpg 1\ninside.jpg 1\n")
    summary = prepare.run(prepare_params(layout), layout, "celeba")
    index = pd.read_parquet(layout.prepared("celeba") / "index.parquet").set_index("key")
    assert index.at["escape.jpg", "status"] == "outside_root" and str(secret) in index.at["escape.jpg", "detail"]
    assert index.at["escape.jpg", "sha1"] == ""  # never read
    assert index.at["inside.jpg", "status"] == "no_face"  # a link within the folder is an ordinary photo
    assert summary["status"] == {"no_face": 3, "outside_root": 1}
    assert set(index.reset_index().columns) == set(INDEX_COLUMNS)  # the documented columns, no more, no less


def prepare_params(layout: Layout):
    from pipelines.config import load

    return load(layout.params_file)


def test_no_eligible_identity_stops_prepare_in_one_line(tmp_path, capsys):
    layout = celeba_copy(tmp_path, {"a.jpg": png(GREY), "b.jpg": png(GREY)})
    write_params(layout, {"data": {"celeba": {"identity_list": "derived", "min_images_per_identity": 5}}})
    line = stopped(layout, capsys)
    assert "data.celeba.min_images_per_identity = 5: no CelebA identity has that many photos (the most any has is 2)" \
        in line


def test_a_latin1_identity_file_stops_prepare_naming_the_file(tmp_path, capsys):
    layout = celeba_copy(tmp_path, {"a.jpg": png(GREY)}, "a.jpg 1\nJos\u00e9.jpg 1\n".encode("latin-1"))
    line = stopped(layout, capsys)
    assert line.endswith("identity_CelebA.txt:2: not UTF-8 text (byte 0xe9); save the file as UTF-8")


def test_leftovers_of_a_killed_run_are_removed_and_stale_parts_never_used(tmp_path):
    layout = celeba_copy(tmp_path, {f"{i}.jpg": png(GREY) for i in range(4)})
    settings = prepare_params(layout)
    prepare.run(settings, layout, "celeba")
    out = layout.prepared("celeba")
    index = pd.read_parquet(out / "index.parquet")
    # What SIGKILLs leave: temporary files of atomic writes, and journal parts of a run with other settings.
    leftovers = [out / "crops" / ".0.jpg.png.k2j1.tmp", out / ".index.parquet.abc.tmp", out / ".summary.json.x.tmp"]
    for path in leftovers:
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"half")
    (out / "journal").mkdir()
    index.assign(config="elsewhere", status="ok").to_parquet(out / "journal" / "part-000003.parquet")
    summary = prepare.run(settings, layout, "celeba")
    assert summary["processed"] == 0 and summary["status"] == {"no_face": 4}
    assert not any(path.exists() for path in leftovers) and not (out / "journal").exists()
    assert sorted(files_under(out)) == ["index.parquet", "summary.json"]


def test_a_truncated_index_of_its_own_is_redone_not_a_crash(tmp_path, capsys):
    layout = celeba_copy(tmp_path, {f"{i}.jpg": png(GREY) for i in range(3)})
    settings = prepare_params(layout)
    prepare.run(settings, layout, "celeba")
    index = layout.prepared("celeba") / "index.parquet"
    index.write_bytes(index.read_bytes()[:100])
    summary = prepare.run(settings, layout, "celeba")
    assert summary["processed"] == 3 and summary["status"] == {"no_face": 3}
    assert f"ignoring unreadable {index}" in capsys.readouterr().out


def test_degenerate_photos_are_too_small_and_errors_are_retried_once_per_run_and_counted_once(tmp_path, monkeypatch):
    photos = {"one_pixel.jpg": png(Image.new("RGB", (1, 1))), "sliver.jpg": png(Image.new("RGB", (60_000, 2))),
              "grey.jpg": png(GREY), "buggy.jpg": png(GREY)}
    layout = celeba_copy(tmp_path, photos, fallback_detector="cnn")  # dlib's CNN fails outright on tiny images
    real, calls = prepare_engine.prepare_face, tmp_path / "calls.txt"  # workers are other processes: a file

    def buggy(path, config, detector):
        with open(calls, "a") as log:
            log.write(f"{path.name}\n")
        if path.name == "buggy.jpg":
            raise ZeroDivisionError("a bug that only this photo triggers")
        return real(path, config, detector)

    monkeypatch.setattr(prepare_engine, "prepare_face", buggy)
    settings = prepare_params(layout)
    first = prepare.run(settings, layout, "celeba")
    assert first["status"] == {"too_small": 2, "no_face": 1, "error": 1} and first["retried_errors"] == 0
    index = pd.read_parquet(layout.prepared("celeba") / "index.parquet").set_index("key")
    assert "60000x2 photo, searched at 500x1" in index.at["sliver.jpg", "detail"]
    calls.unlink()
    second = prepare.run(settings, layout, "celeba")  # the bug is still there: one retry, no stop
    assert calls.read_text() == "buggy.jpg\n" and second["processed"] == 1 and second["retried_errors"] == 1
    assert second["status"] == {"too_small": 2, "no_face": 1, "error": 1}


def test_most_photos_failing_stops_prepare_in_one_line(tmp_path, monkeypatch, capsys):
    layout = celeba_copy(tmp_path, {f"{i}.jpg": png(GREY) for i in range(3)})

    def broken(*args):
        raise AssertionError("dlib says:\n  line two\n  line three")

    monkeypatch.setattr(prepare_engine, "prepare_face", broken)
    line = stopped(layout, capsys)
    assert "3 of 3 photos failed with an unexpected error" in line and "AssertionError: dlib says: line two" in line
    assert os.listdir(layout.prepared("celeba") / "journal")  # the rows are kept, to be retried


def test_prepare_never_runs_dlibs_cnn_in_its_own_process(tmp_path):
    """A process that ran dlib's CNN forks workers that hang in it: prepare works in workers, even with one."""
    one = celeba_copy(tmp_path / "one", {"grey.jpg": png(GREY)}, fallback_detector="cnn")  # one worker
    assert prepare.run(prepare_params(one), one, "celeba")["status"] == {"no_face": 1}  # HOG, then the CNN
    two = celeba_copy(tmp_path / "two", {f"{i}.jpg": png(GREY) for i in range(3)}, fallback_detector="cnn", workers=2)
    with deadline(60):
        assert prepare.run(prepare_params(two), two, "celeba")["status"] == {"no_face": 3}


def test_ctrl_c_stops_prepare_at_once_even_while_a_worker_hangs(tmp_path, monkeypatch):
    layout = celeba_copy(tmp_path, {f"{i}.jpg": png(GREY) for i in range(4)}, workers=2)
    real = prepare_engine.prepare_face

    hanging = multiprocessing.get_context("fork").Event()  # the worker's report, not a timer

    def hangs_on_the_last(path, config, detector):
        if path.name == "3.jpg":
            hanging.set()
            time.sleep(3600)  # a library call that never returns
        return real(path, config, detector)

    sent = []

    def ctrl_c_once_hanging():
        if hanging.wait(60):
            sent.append(time.monotonic())
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(prepare_engine, "prepare_face", hangs_on_the_last)
    # Children that outlive a test of their own (multiprocessing's resource tracker, after a spawn) are not ours.
    before = set(psutil.Process().children())
    threading.Thread(target=ctrl_c_once_hanging, daemon=True).start()
    with busy_cores(), deadline(60), pytest.raises(KeyboardInterrupt):
        prepare.run(prepare_params(layout), layout, "celeba")
    assert time.monotonic() - sent[0] < 10  # stopped within seconds of the Ctrl-C, the hung worker included
    assert set(psutil.Process().children()) - before == set()  # no worker left behind, hung or idle
    kept = pd.concat(pd.read_parquet(p) for p in (layout.prepared("celeba") / "journal").glob("*.parquet"))
    # The finished photos are journalled: 3.jpg was handed out after two results had come back (one task
    # per worker in flight); 2.jpg may have been finishing when the Ctrl-C came.
    assert set(kept["key"]) <= {"0.jpg", "1.jpg", "2.jpg"} and len(kept) >= 2
