"""A Ctrl-C stops a stage at any moment: during its start-up, and while its worker pool is being started.

Both signals are sent on an event of the stopped process, never on a timer: the start-up one when
`python -X importtime` reports that a module of the stage's imports has loaded, the pool one from
inside the pool's own start of a worker, with another thread that may receive it. Both run with
every core busy.
"""

from __future__ import annotations

import multiprocessing.context
import os
import signal
import struct
import subprocess
import sys
import threading
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
    # A library's thread (torch, tqdm, a server) that the kernel may hand the signal to.
    library_thread = threading.Thread(target=threading.Event().wait, args=(30,), daemon=True)
    library_thread.start()
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


HANGING = multiprocessing.get_context("fork").Event()


def hang(item: int) -> int:
    HANGING.set()  # the worker's report that it hangs
    time.sleep(3600)  # a library call that never returns
    return item


def test_a_ctrl_c_received_by_another_thread_stops_a_pool_whose_workers_all_hang():
    HANGING.clear()
    library_thread = threading.Thread(target=threading.Event().wait, args=(60,), daemon=True)
    library_thread.start()
    sent = []

    def ctrl_c_to_the_library_thread_once_hanging():
        if HANGING.wait(60):
            sent.append(time.monotonic())
            signal.pthread_kill(library_thread.ident, signal.SIGINT)  # the kernel may pick any thread

    threading.Thread(target=ctrl_c_to_the_library_thread_once_hanging, daemon=True).start()
    with busy_cores():
        spinners = set(psutil.Process().children())
        with deadline(60), pytest.raises(KeyboardInterrupt):
            for _ in imap_unordered(hang, [1, 2], workers=2):
                pass
        assert time.monotonic() - sent[0] < 10
        assert set(psutil.Process().children()) == spinners


def write_half_a_result_then_hang(item: int) -> int:
    """As a worker killed while it wrote its result: a message header and part of its bytes, then nothing."""
    result_pipe = multiprocessing.current_process()._args[1]._writer  # the pool's result queue, inherited by fork
    os.write(result_pipe.fileno(), struct.pack("!i", 1 << 20) + b"\x80" * 64)
    HANGING.set()
    time.sleep(3600)
    return item


def test_a_stop_while_a_killed_worker_left_half_a_result_in_the_pipe_does_not_hang():
    """The pool's manager thread waits for the rest of that message; a stop must end it, not wait with it."""
    HANGING.clear()
    threading.Thread(target=lambda: HANGING.wait(60) and os.kill(os.getpid(), signal.SIGINT), daemon=True).start()
    with deadline(60), pytest.raises(KeyboardInterrupt):
        for _ in imap_unordered(write_half_a_result_then_hang, [1], workers=1):
            pass
    assert not [thread for thread in threading.enumerate() if "ExecutorManagerThread" in type(thread).__name__]
