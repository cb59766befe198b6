"""Reused rows are checked whole: a journal part or an index rewritten as valid Parquet with other values is redone.

The hostile files are made here: a part whose landmarks were shifted (its digest column kept), a part
without digests, and the prepared index of a real run with one row's landmarks changed.
"""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from infra.journal import ROW_DIGEST, Journal, row_digest
from pipelines import download, prepare
from pipelines.config import load
from pipelines.layout import Layout
from tests.helpers import write_params

ROWS = [{"key": "a.jpg", "status": "ok", "landmarks": [1.5, 2.0, 3.25], "transform": [0.0, 1.0, 2.0], "n_faces": 1,
         "sha1": "ab"},
        {"key": "b.jpg", "status": "no_face", "landmarks": None, "transform": None, "n_faces": None, "sha1": "cd"}]


def tamper(path, change) -> None:
    frame = pd.read_parquet(path)
    change(frame)
    frame.to_parquet(path, index=False)


def test_rows_come_back_as_written_and_changed_rows_are_dropped(tmp_path, capsys):
    journal = Journal(tmp_path / "index.parquet")
    journal.append(ROWS)
    _, parts = journal.rows()
    assert [row["key"] for row in parts] == ["a.jpg", "b.jpg"] and all(ROW_DIGEST not in row for row in parts)
    assert [row_digest(row) for row in parts] == [row_digest(row) for row in ROWS]  # stable through Parquet
    part, = journal.parts()

    def shift(frame):
        frame.at[0, "landmarks"] = np.array([1.5, 2.0, 9.0])  # valid Parquet, the old digest kept

    tamper(part, shift)
    _, parts = journal.rows()
    assert [row["key"] for row in parts] == ["b.jpg"]
    assert capsys.readouterr().out.splitlines() == [
        f"ignoring 1 of the 2 rows of {part}: their values do not match their digest (changed after they were "
        "written); they are done again"]
    def unseal(frame):
        del frame[ROW_DIGEST]  # rows that vouch for nothing

    tamper(part, unseal)
    assert journal.rows() == ([], [])


@pytest.mark.realdata
def test_prepare_redoes_a_row_whose_landmarks_were_changed(celeba_aligned_root, tmp_path):
    photos = tmp_path / "celeba"
    (photos / "img_align_celeba").mkdir(parents=True)
    keys = sorted(path.name for path in (celeba_aligned_root / "img_align_celeba").glob("*.jpg"))[:3]
    for key in keys:
        shutil.copy(celeba_aligned_root / "img_align_celeba" / key, photos / "img_align_celeba" / key)
    (photos / "identity_CelebA.txt").write_text("".join(f"{key} 1\n" for key in keys))
    layout = Layout(tmp_path / "repo")
    layout.root.mkdir()
    write_params(layout, {"data": {"celeba": {"root": str(photos), "identity_list": "derived",
                                              "min_images_per_identity": 1}}, "prepare": {"workers": 1}})
    params = load(layout.params_file)
    download.run(params, layout, "celeba")
    prepare.run(params, layout, "celeba")
    index_path = layout.prepared("celeba") / "index.parquet"
    original = pd.read_parquet(index_path)
    assert (original["status"] == "ok").all()

    def move_first_landmark(frame):
        frame.at[0, "landmarks"] = frame.at[0, "landmarks"] + 5.0

    tamper(index_path, move_first_landmark)
    summary = prepare.run(params, layout, "celeba")
    assert summary["processed"] == 1 and summary["reused"] == 2
    pd.testing.assert_frame_equal(pd.read_parquet(index_path), original)
