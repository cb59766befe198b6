"""`dvc repro pairs` on a clean copy of the repository with the roots pointed at ../shared/data."""

from __future__ import annotations

import os
import shutil

import pandas as pd
import pytest
import yaml

from tests.conftest import PREPARED_CACHE, dvc, repository_copy

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


def test_repro_pairs_then_nothing_to_do(tmp_path, celeba_aligned_root, lfw_root, prepared_lfw):
    workdir = repository_copy(tmp_path / "repo")
    params = yaml.safe_load((workdir / "params.yaml").read_text())
    params["data"]["celeba"]["root"] = str(celeba_aligned_root)
    params["data"]["lfw"]["root"] = str(lfw_root)
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # Seed LFW's prepared photos from the test cache (same settings): the stage must reuse them, not
    # redo two minutes of detection. Hard links keep the copy instant; the stage replaces files atomically.
    seeded = workdir / "data/prepared/lfw"
    seeded.parent.mkdir(parents=True)
    shutil.copytree(prepared_lfw, seeded, copy_function=os.link)

    first = dvc(workdir, "repro", "pairs")
    assert "Running stage 'pairs'" in first and "lfw: 7701 photos, 7701 unchanged, 0 to process" in first
    lfw = pd.read_csv(workdir / "data/pairs/lfw_test.csv")
    assert len(lfw) == 6000 and sorted(lfw["fold"].unique()) == list(range(1, 11))
    assert (lfw.groupby("fold")["same"].sum() == 300).all()
    celeba_test = pd.read_csv(workdir / "data/pairs/celeba_test.csv")
    assert len(celeba_test) == 30 and celeba_test["source_identity"].nunique() == 1

    second = dvc(workdir, "repro", "pairs")
    assert "Running stage" not in second
    status = dvc(workdir, "status", "pairs")  # pairs and everything upstream of it
    assert "up to date" in status.lower()
    assert PREPARED_CACHE.is_dir()
