"""A killed prepare resumes without redoing finished photos and never vouches for a wrong crop.

Real faces: 40 photos of the aligned CelebA mini (8 of each of its 5 identities). Each case
compares every crop, mask and index row with an uninterrupted run.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
from PIL import Image

from facedata import prepare_engine
from facedata.datasets import read_identities
from pipelines import prepare
from pipelines.config import load
from pipelines.layout import Layout
from tests.helpers import REPO, deadline, write_params

pytestmark = pytest.mark.realdata
PER_IDENTITY = 8
A, B = {}, {"eye_scale": 4.0}  # settings of the reference run, and other settings


@pytest.fixture(scope="module")
def photos(celeba_aligned_root, tmp_path_factory) -> Path:
    """A CelebA copy with the first 8 photos of each identity of the aligned mini."""
    root = tmp_path_factory.mktemp("celeba40")
    (root / "img_align_celeba").mkdir()
    identities = read_identities(celeba_aligned_root / "identity_CelebA.txt")
    chosen = {}
    for identity in sorted(set(identities.values())):
        for key in sorted(k for k, i in identities.items() if i == identity)[:PER_IDENTITY]:
            chosen[key] = identity
            shutil.copy(celeba_aligned_root / "img_align_celeba" / key, root / "img_align_celeba" / key)
    (root / "identity_CelebA.txt").write_text("".join(f"{k} {i}\n" for k, i in sorted(chosen.items())))
    return root


def stage_layout(root: Path, photos: Path, settings: dict) -> Layout:
    """A repository folder whose params.yaml points at `photos`, with download@celeba done."""
    from pipelines import download

    layout = Layout(root)
    layout.root.mkdir(parents=True, exist_ok=True)
    use(layout, photos, settings)
    download.run(load(layout.params_file), layout, "celeba")
    return layout


def use(layout: Layout, photos: Path, settings: dict) -> None:
    celeba = {"root": str(photos), "identity_list": "derived", "min_images_per_identity": 1}
    write_params(layout, {"data": {"celeba": celeba}, "prepare": {"workers": 2, **settings}})


@pytest.fixture(scope="module")
def reference(photos, tmp_path_factory) -> Path:
    """data/prepared/celeba of an uninterrupted run with settings A."""
    layout = stage_layout(tmp_path_factory.mktemp("reference"), photos, A)
    summary = prepare.run(load(layout.params_file), layout, "celeba")
    assert summary["status"] == {"ok": 5 * PER_IDENTITY}
    return layout.prepared("celeba")


def contents(prepared: Path) -> tuple[pd.DataFrame, dict[str, bytes]]:
    """(the index, every other file's bytes but summary.json's, which records times)."""
    files = {p.relative_to(prepared).as_posix(): p.read_bytes() for p in prepared.rglob("*")
             if p.is_file() and p.name not in ("index.parquet", "summary.json")}
    return pd.read_parquet(prepared / "index.parquet"), files


def assert_same_as_reference(prepared: Path, reference: Path) -> None:
    index, files = contents(prepared)
    expected_index, expected_files = contents(reference)
    pd.testing.assert_frame_equal(index, expected_index)
    assert sorted(files) == sorted(expected_files)  # no journal, no temporary file, nothing stale
    assert [name for name in files if files[name] != expected_files[name]] == []
    assert sorted(p.name for p in prepared.iterdir()) == ["crops", "index.parquet", "masks", "summary.json"]


def journalled(prepared: Path) -> set[str]:
    """Keys the journal and index hold rows for."""
    tables = sorted((prepared / "journal").glob("part-*.parquet")) + [prepared / "index.parquet"]
    return {key for table in tables if table.is_file() for key in pd.read_parquet(table)["key"]}


def crops_written_since(prepared: Path, start_ns: int) -> int:
    folder = prepared / "crops"
    return sum(p.stat().st_mtime_ns >= start_ns for p in folder.glob("*.png")) if folder.is_dir() else 0


def killed_run(layout: Layout, signal_number: int, seed: int) -> tuple[subprocess.CompletedProcess, int]:
    """`python -m pipelines.prepare celeba`, killed once a random number of crops were written, after a random delay.

    SIGINT goes to the whole process group, as Ctrl-C does; SIGKILL only to the stage process, as the
    out-of-memory killer does (its workers must then go too). Returns the result and the session id.
    """
    rng = random.Random(seed)
    target, delay = rng.randint(1, 5 * PER_IDENTITY - 1), rng.uniform(0, 0.05)
    start_ns = time.time_ns()
    process = subprocess.Popen([sys.executable, "-m", "pipelines.prepare", "celeba"], cwd=layout.root,
                               env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    while process.poll() is None and crops_written_since(layout.prepared("celeba"), start_ns) < target:
        time.sleep(0.002)
    time.sleep(delay)
    if signal_number == signal.SIGINT:
        os.killpg(process.pid, signal.SIGINT)
    else:
        process.kill()
    stdout, stderr = process.communicate(timeout=60)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), process.pid


def session_processes(session: int) -> list[psutil.Process]:
    alive = []
    for process in psutil.process_iter(["status"]):
        try:
            if os.getsid(process.pid) == session and process.info["status"] != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except (ProcessLookupError, PermissionError):
            continue
    return alive


def check_the_kill(result: subprocess.CompletedProcess, signal_number: int, session: int) -> None:
    """Ctrl-C: one line and status 130 (or 0 if the run ended first). SIGKILL: no worker survives the stage."""
    if signal_number == signal.SIGINT:
        assert result.returncode in (0, 130), result.stderr
        if result.returncode == 130:
            assert result.stderr.strip().splitlines() == [
                "prepare@celeba: interrupted; finished work is kept, re-run to continue"]
    else:
        assert result.returncode == -signal.SIGKILL
    give_up = time.monotonic() + 10
    while session_processes(session) and time.monotonic() < give_up:
        time.sleep(0.05)
    assert session_processes(session) == [], "processes outlived the stopped stage"


KILLS = [pytest.param(signal_number, seed, id=f"{signal_number.name}-seed{seed}")
         for signal_number in (signal.SIGINT, signal.SIGKILL) for seed in (0, 1, 2)]


@pytest.mark.slow
@pytest.mark.parametrize(("signal_number", "seed"), KILLS)
def test_a_killed_run_resumes_with_only_the_unfinished_photos(photos, reference, tmp_path, signal_number, seed):
    layout = stage_layout(tmp_path, photos, A)
    result, session = killed_run(layout, signal_number, seed)
    check_the_kill(result, signal_number, session)
    done = journalled(layout.prepared("celeba"))
    summary = prepare.main(["celeba"], layout=layout)  # the next run of the stage takes over a killed run's lock
    assert summary["processed"] == 5 * PER_IDENTITY - len(done) and summary["reused"] == len(done)
    assert_same_as_reference(layout.prepared("celeba"), reference)


@pytest.mark.slow
@pytest.mark.parametrize(("signal_number", "seed"), KILLS)
def test_a_run_killed_with_other_settings_never_leaves_a_row_vouching_for_its_crops(photos, reference, tmp_path,
                                                                                    signal_number, seed):
    layout = stage_layout(tmp_path, photos, A)
    shutil.copytree(reference, layout.prepared("celeba"))  # a finished run with settings A
    use(layout, photos, B)
    result, session = killed_run(layout, signal_number, seed)
    check_the_kill(result, signal_number, session)
    use(layout, photos, A)  # settings reverted
    _, expected = contents(reference)
    _, found = contents(layout.prepared("celeba"))
    overwritten = {name.split("/", 1)[1][: -len(".png")] for name in expected if found.get(name) != expected[name]}
    assert overwritten, "the killed run wrote no crop: the case tests nothing"
    summary = prepare.main(["celeba"], layout=layout)  # the next run of the stage takes over a killed run's lock
    assert summary["processed"] == len(overwritten)  # exactly the photos whose files no longer match
    assert_same_as_reference(layout.prepared("celeba"), reference)


def test_a_killed_worker_fails_the_stage_in_seconds_naming_its_photo(photos, reference, tmp_path, monkeypatch,
                                                                      capsys):
    layout = stage_layout(tmp_path, photos, A)
    doomed = sorted(read_identities(photos / "identity_CelebA.txt"))[12]
    real = prepare_engine.prepare_face

    def killed_on_doomed(path, config, detector):
        if path.name == doomed:
            os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer does
        return real(path, config, detector)

    monkeypatch.setattr(prepare_engine, "prepare_face", killed_on_doomed)
    started = time.monotonic()
    with deadline(60), pytest.raises(SystemExit) as stop:
        prepare.main(["celeba"], layout=layout)
    assert stop.value.code == 2 and time.monotonic() - started < 30
    line, = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("prepare@celeba: a worker process ended abruptly") and doomed in line
    done = journalled(layout.prepared("celeba"))
    assert f"the {len(done)} photos finished before are kept" in line and len(done) >= 12 - 2
    monkeypatch.undo()
    summary = prepare.run(load(layout.params_file), layout, "celeba")
    assert summary["processed"] == 5 * PER_IDENTITY - len(done)
    assert_same_as_reference(layout.prepared("celeba"), reference)


def test_photos_differing_only_in_extension_keep_their_own_crops(celeba_aligned_root, tmp_path):
    folder = tmp_path / "copy" / "img_align_celeba"
    folder.mkdir(parents=True)
    faces = sorted((celeba_aligned_root / "img_align_celeba").glob("*.jpg"))[:2]
    shutil.copy(faces[0], folder / "coll.jpg")
    Image.open(faces[1]).save(folder / "coll.png")
    (folder.parent / "identity_CelebA.txt").write_text("coll.jpg 1\ncoll.png 2\n")
    layout = stage_layout(tmp_path / "work", folder.parent, A)
    summary = prepare.run(load(layout.params_file), layout, "celeba")
    assert summary["status"] == {"ok": 2}
    crops = layout.prepared("celeba") / "crops"
    assert sorted(p.name for p in crops.iterdir()) == ["coll.jpg.png", "coll.png.png"]
    assert (crops / "coll.jpg.png").read_bytes() != (crops / "coll.png.png").read_bytes()
