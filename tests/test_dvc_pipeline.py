"""`dvc repro pairs` on a clean copy of the repository with the roots pointed at ../shared/data."""

from __future__ import annotations

import os
import shutil

import pandas as pd
import pytest

from tests.helpers import dvc, params_mapping, repository_copy, write_params

pytestmark = [pytest.mark.realdata, pytest.mark.slow]


def test_repro_pairs_then_nothing_to_do(tmp_path, celeba_aligned_root, lfw_root, prepared_lfw):
    layout = repository_copy(tmp_path / "repo")
    write_params(layout, params_mapping(celeba=celeba_aligned_root, lfw=lfw_root))
    # Seed LFW's prepared photos from the test cache (same settings): the stage must reuse them, not
    # redo two minutes of detection. Hard links keep the copy instant; the stage replaces files atomically.
    layout.prepared("lfw").parent.mkdir(parents=True)
    shutil.copytree(prepared_lfw, layout.prepared("lfw"), copy_function=os.link)

    first = dvc(layout, "repro", "pairs")
    assert "Running stage 'pairs'" in first and "lfw: 7701 photos, 7701 unchanged, 0 to process" in first
    lfw = pd.read_csv(layout.test_pairs("lfw"))
    assert len(lfw) == 6000 and sorted(lfw["fold"].unique()) == list(range(1, 11))
    assert (lfw.groupby("fold")["same"].sum() == 300).all()
    celeba_test = pd.read_csv(layout.test_pairs("celeba"))
    assert len(celeba_test) == 30 and celeba_test["source_identity"].nunique() == 1

    second = dvc(layout, "repro", "pairs")
    assert "Running stage" not in second
    status = dvc(layout, "status", "pairs")  # pairs and everything upstream of it
    assert "up to date" in status.lower()
