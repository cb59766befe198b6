"""A full disk and a second run of a running stage are one line each, and lose nothing.

The full disk is a patched write that raises ENOSPC, as write() does, once a byte budget is spent; the
concurrent run is a second process started while this one holds the stage's lock; the stale lock is the
file a SIGKILLed holder left.
"""

from __future__ import annotations

import errno
import os
import pathlib
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from infra.atomic import DiskFullError, write_json, write_table
from infra.locks import StageBusyError, lock_path, stage_lock
from pipelines import anonymise
from pipelines.layout import Layout
from tests.helpers import REPO, fake_test_set, params_mapping, write_params


@pytest.fixture()
def small_disk(monkeypatch):
    """Path.write_bytes fails with ENOSPC (and no file name, as write() does) once `budget[0]` bytes are written."""
    budget = [0]
    write = pathlib.Path.write_bytes

    def limited(self, data):
        if len(data) > budget[0]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        budget[0] -= len(data)
        return write(self, data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", limited)
    return budget


def test_a_full_disk_keeps_the_old_file_and_names_the_new_one(tmp_path, small_disk):
    target = tmp_path / "summary.json"
    target.write_text("old")
    with pytest.raises(DiskFullError, match=rf"no space left on the device writing {target} \([0-9,.]+ MiB free in "):
        write_json(target, {"value": 1})
    assert target.read_text() == "old" and sorted(tmp_path.iterdir()) == [target]  # no temporary file left
    table = tmp_path / "index.parquet"

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    frame = pd.DataFrame({"a": [1]})
    frame.to_parquet = no_space  # pandas writes the table itself, not through Path.write_bytes
    with pytest.raises(DiskFullError, match=f"writing {table}"):
        write_table(table, frame)
    assert sorted(tmp_path.iterdir()) == [target]


def stage_outputs(layout: Layout) -> dict[str, bytes]:
    """Every file under outputs/ except summary.json (it records the run's time)."""
    return {str(path.relative_to(layout.root)): path.read_bytes() for path in sorted(layout.outputs_root.rglob("*"))
            if path.is_file() and path.name != "summary.json"}


def test_a_full_disk_stops_a_stage_in_one_line_and_a_rerun_completes_it(tmp_path, small_disk, capsys):
    uninterrupted, interrupted = Layout(tmp_path / "a"), Layout(tmp_path / "b")
    for layout in (uninterrupted, interrupted):
        layout.root.mkdir()
        write_params(layout, params_mapping())
        for dataset in ("celeba", "lfw"):
            fake_test_set(layout, dataset)
    small_disk[0] = 10**9
    anonymise.main(["original"], layout=uninterrupted)
    small_disk[0] = 0
    with pytest.raises(SystemExit) as stop:
        anonymise.main(["original"], layout=interrupted)
    line, = capsys.readouterr().err.splitlines()
    staged = interrupted.outputs("celeba", "original").parent / ".original.partial" / "0.png"
    assert stop.value.code == 2
    assert line.startswith(f"anonymise@original: no space left on the device writing {staged} (")
    assert stage_outputs(interrupted) == {}  # nothing half-written where DVC or evaluate would look
    small_disk[0] = 10**9  # space freed
    anonymise.main(["original"], layout=interrupted)
    assert stage_outputs(interrupted) == stage_outputs(uninterrupted) != {}


def run_stage(layout: Layout, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.anonymise", *args], cwd=layout.root, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_a_second_run_of_a_running_stage_refuses_in_one_line(tmp_path):
    layout = Layout(tmp_path)
    write_params(layout, params_mapping())
    for dataset in ("celeba", "lfw"):
        fake_test_set(layout, dataset)
    with stage_lock(layout.outputs_root, "anonymise@original"):  # the running stage
        second = run_stage(layout, "original")
        with pytest.raises(StageBusyError, match=f"already running in process {os.getpid()}"), \
                stage_lock(layout.outputs_root, "anonymise@original"):
            pass
    assert second.returncode == 2 and second.stderr.splitlines() == [
        f"anonymise@original: already running in process {os.getpid()} (lock "
        f"{lock_path(pathlib.Path('outputs'), 'anonymise@original')}): wait for it to finish, or stop it, before "
        "running it again"]
    assert not layout.outputs("celeba", "original").exists()  # the refused run wrote nothing
    assert not lock_path(layout.outputs_root, "anonymise@original").exists()  # removed on exit
    assert run_stage(layout, "original").returncode == 0  # and the stage runs once the first has finished


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path):
    holder = textwrap.dedent(f"""
        import os, signal
        from infra.locks import stage_lock
        with stage_lock({str(tmp_path)!r}, "prepare@celeba"):
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    killed = subprocess.run([sys.executable, "-c", holder], cwd=REPO, capture_output=True, text=True)
    assert killed.returncode == -9 and lock_path(tmp_path, "prepare@celeba").is_file()  # the stale lock
    with stage_lock(tmp_path, "prepare@celeba"):
        assert lock_path(tmp_path, "prepare@celeba").read_text() == f"{os.getpid()}\n"
    assert not lock_path(tmp_path, "prepare@celeba").exists()
