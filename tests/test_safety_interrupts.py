"""A Ctrl-C stops a stage at any moment: during its start-up, and while its worker pool is being started.

Both signals are sent on an event of the stopped process, never on a timer: the start-up one when
`python -X importtime` reports that a module of the stage's imports has loaded, the pool one from
inside the pool's own start of a worker. Both run with every core busy.
"""

from __future__ import annotations

import multiprocessing.context
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from infra.pool import imap_unordered
from pipelines.layout import Layout
from tests.helpers import REPO, busy_cores, deadline, params_mapping, write_params


def test_a_ctrl_c_during_start_up_stops_the_stage_in_one_line(tmp_path):
    layout = Layout(tmp_path)
    write_params(layout, params_mapping())
    with busy_cores():
        process = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "pipelines.prepare", "celeba"],
                                   cwd=layout.root, env={**os.environ, "PYTHONPATH": str(REPO)},
                                   stderr=subprocess.PIPE, text=True)
        lines = []
        for line in process.stderr:  # one line per import, as each finishes
            lines.append(line)
            if line.split("|")[-1].strip() == "numpy":  # numpy has loaded: the stage is in the middle of its imports
                process.send_signal(signal.SIGINT)
                sent = time.monotonic()
                break
        rest = process.stderr.read()
        process.wait(timeout=60)
    assert time.monotonic() - sent < 10
    said = [line for line in (lines + rest.splitlines()) if not line.startswith("import time:")]
    assert process.returncode == 130 and said == ["pipelines: interrupted during start-up; nothing was done"]
    assert not layout.prepared("celeba").exists()


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def double(item: int) -> int:
    return 2 * item


def test_a_ctrl_c_while_the_pool_starts_its_workers_leaves_none_behind(monkeypatch):
    start = multiprocessing.context.ForkProcess.start
    interrupted = []

    def start_then_ctrl_c(self):
        start(self)
        if not interrupted:  # right after the first fork, before the pool has registered the worker
            interrupted.append(self.pid)
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(multiprocessing.context.ForkProcess, "start", start_then_ctrl_c)
    with busy_cores():
        spinners = set(psutil.Process().children())
        with deadline(60), pytest.raises(KeyboardInterrupt):
            for _ in imap_unordered(double, list(range(8)), workers=2):
                pass
        stopped = time.monotonic()
        while not gone(interrupted[0]) and time.monotonic() - stopped < 10:  # SIGTERMed: ending
            time.sleep(0.05)
        assert gone(interrupted[0])  # the worker forked as the Ctrl-C came was stopped too
        assert set(psutil.Process().children()) == spinners  # no worker left behind
