"""What a killed stage leaves is never trusted: staging folders, truncated indexes and checkpoints, dead workers."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from facedata.prepared import PreparedDataset
from infra.errors import DataError
from infra.pool import WorkerDiedError
from metrics.store import map_parallel
from pipelines import anonymise, pairs
from pipelines.layout import Layout
from tests.helpers import deadline, fake_test_set, params, params_mapping, repository_copy, write_params


def test_anonymise_removes_a_killed_runs_staging_folders_first(tmp_path):
    layout = Layout(tmp_path)
    for dataset in ("celeba", "lfw"):
        fake_test_set(layout, dataset)
        left = layout.outputs(dataset, "original").parent / ".original.partial"  # what a SIGKILL leaves
        left.mkdir(parents=True)
        (left / "7.png").write_bytes(b"half")
    anonymise.run(params(), layout, "original")
    for dataset in ("celeba", "lfw"):
        assert sorted(p.name for p in layout.outputs(dataset, "original").parent.iterdir()) == ["original"]
        assert sorted(p.name for p in layout.outputs(dataset, "original").iterdir()) == [
            "0.png", "gallery", "manifest.csv", "summary.json"]  # gallery: the parrot metrics' (pipelines.gallery)


def test_leftovers_of_killed_stages_are_never_inputs_of_a_later_stage(tmp_path):
    """DVC hashes `outputs` for the report, data/raw/<dataset> for prepare: staging and temporary files are ignored."""
    from dvc.repo import Repo

    layout = repository_copy(tmp_path / "repo")
    leftovers = ["outputs/celeba/.blur.partial/3.png", "data/raw/.lfw.extracting/lfw-deepfunneled/A/A_0001.jpg",
                 "data/prepared/celeba/crops/.000001.jpg.png.k2j1.tmp", "models/anonygan-68/.checkpoint.pt.x.tmp",
                 "data/prepared/celeba/.prepare@celeba.lock", "outputs/.anonymise@blur.lock"]
    kept = ["outputs/celeba/blur/3.png", "data/prepared/celeba/crops/000001.jpg.png"]
    for name in leftovers + kept:
        (layout.root / name).parent.mkdir(parents=True, exist_ok=True)
        (layout.root / name).write_bytes(b"x")
    repo = Repo(str(layout.root))
    try:
        ignored = {name: repo.dvcignore.is_ignored(repo.fs, str(layout.root / name)) for name in leftovers + kept}
    finally:
        repo.close()
    assert ignored == {name: name in leftovers for name in leftovers + kept}


def test_a_truncated_index_is_one_line_naming_the_file(tmp_path, capsys):
    layout = Layout(tmp_path)
    write_params(layout, params_mapping())
    for dataset in ("celeba", "lfw"):
        fake_test_set(layout, dataset)
    index = layout.prepared("celeba") / "index.parquet"
    index.write_bytes(index.read_bytes()[: index.stat().st_size // 2])
    with pytest.raises(DataError, match=rf"{index} is not a readable prepared index .*dvc repro prepare@celeba"):
        PreparedDataset(index.parent)
    with pytest.raises(SystemExit) as stop:
        pairs.main([], layout=layout)
    line, = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and line.startswith(f"pairs: {index} is not a readable prepared index")


def test_a_truncated_checkpoint_is_one_line_naming_the_file(tmp_path, capsys):
    layout = Layout(tmp_path)
    write_params(layout, params_mapping())
    for dataset in ("celeba", "lfw"):
        fake_test_set(layout, dataset)
    checkpoint = layout.checkpoint("anonygan-68")
    checkpoint.parent.mkdir(parents=True)
    torch.save({"format": 2, "kind": "anonygan", "modules": {"generator": {"w": torch.zeros(1000)}}}, checkpoint)
    checkpoint.write_bytes(checkpoint.read_bytes()[:-100])
    with pytest.raises(SystemExit) as stop:
        anonymise.main(["anonygan-68"], layout=layout)
    line, = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2
    assert line.startswith(f"anonymise@anonygan-68: {checkpoint} is not a readable anonygan checkpoint")
    assert line.endswith("delete it and re-run its train stage")


def twice_or_die(item: str) -> str:
    if item == "doomed.png":
        os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer does
    return item * 2


def test_a_killed_metrics_worker_fails_at_once_naming_its_image():
    items = ["a.png", "b.png", "doomed.png", "c.png", "d.png"]
    assert map_parallel(twice_or_die, [i for i in items if i != "doomed.png"], workers=2) == [
        i * 2 for i in items if i != "doomed.png"]
    with deadline(60), pytest.raises(WorkerDiedError, match=r"ended abruptly .* working on .*doomed\.png"):
        map_parallel(twice_or_die, items, workers=2)
