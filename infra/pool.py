"""Process pools that report a dead worker at once instead of waiting for it.

The out-of-memory killer ends a worker with SIGKILL; `multiprocessing.Pool` then waits forever
for the task that worker held. `imap_unordered` runs tasks on a `concurrent.futures`
process pool, which notices a dead worker within moments (`BrokenProcessPool`), and keeps at
most one task per worker in flight, so the tasks that were running when a worker died are
known and named in the error.

Workers ignore Ctrl-C (the parent handles it: it stops the run and keeps finished work) and, on
Linux, die with the parent, so a killed stage leaves no worker behind that could still write.
While the pool starts workers and threads, a Ctrl-C is held back for those few instructions and
then delivered, so it can never leave a worker the pool does not know of. The wait for results
wakes up every `_POLL_S`: a SIGINT that the kernel handed to another thread (torch's, tqdm's)
only flags the main thread, which must then run briefly to raise KeyboardInterrupt, even when
every worker hangs.

The calling process never runs the work itself, even for one worker: dlib's CNN detector starts
a thread pool that a fork does not copy, so once a process has run it, workers forked from it
hang in their first CNN call (measured). Loading models before forking is safe and shares them.
"""

from __future__ import annotations

import ctypes
import itertools
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any

from infra.errors import SuiteError

#: Longest wait for a result before this thread checks for a Ctrl-C again.
_POLL_S = 0.2
_PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h): a signal the kernel sends when the parent dies


class WorkerDiedError(SuiteError, RuntimeError):
    """A worker process ended abruptly (e.g. killed by the out-of-memory killer); names what it was working on."""


def imap_unordered(function: Callable[[Any], Any], items: Sequence[Any], workers: int, *,
                   initializer: Callable[..., None] | None = None, initargs: tuple = (),
                   describe: Callable[[Any], str] = str) -> Iterator[tuple[int, Any]]:
    """(position in `items`, function(item)) for every item, as they finish, computed in worker processes.

    `workers` processes at most (at least one); `function` and `initializer` must be module-level
    functions. A worker that dies raises WorkerDiedError naming the items in flight
    (`describe(item)`), at most one per worker.
    """
    if not items:
        return
    workers = max(1, min(workers, len(items)))
    # fork: workers start at once with the parent's modules loaded (dlib, torch) and see its state.
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"), initializer=_start_worker,
                               initargs=(os.getpid(), initializer, initargs))
    queue = iter(enumerate(items))
    running: dict[Future, int] = {}
    try:
        with _deferred_interrupts():  # the first submit starts the workers and the pool's threads
            for position, item in itertools.islice(queue, workers):
                running[pool.submit(function, item)] = position
        while running:
            # A timeout, so that a Ctrl-C whose signal another thread received is handled within moments
            # even while every worker hangs (the handler runs only between this thread's instructions).
            done, _ = wait(running, timeout=_POLL_S, return_when=FIRST_COMPLETED)
            for future in done:
                position = running.pop(future)
                try:
                    result = future.result()
                except BrokenProcessPool:
                    held = [describe(items[p]) for p in sorted([position, *running.values()])]
                    raise WorkerDiedError(
                        "a worker process ended abruptly (killed, e.g. by the out-of-memory killer) while working "
                        f"on {', '.join(held)}") from None
                for next_position, item in itertools.islice(queue, 1):
                    with _deferred_interrupts():
                        running[pool.submit(function, item)] = next_position
                yield position, result
    except BaseException:  # Ctrl-C, a dead worker, a consumer that stopped early: no waiting for a task in flight
        _terminate_workers(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@contextmanager
def _deferred_interrupts() -> Iterator[None]:
    """A Ctrl-C held back for the block, and delivered once it ends (main thread only; elsewhere a no-op).

    One that landed inside `submit` could leave a forked worker that the pool never registered (so
    never stopped) or a half-started pool; held back, it arrives once the pool is consistent, where
    the caller stops every worker. The Python handler is swapped for a recorder (a SIGINT may reach
    any thread, but its handler always runs in this one), and SIGINT is blocked in this thread, so
    the threads the pool starts meanwhile (its manager, the queue feeder) never receive it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    handler = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a SIGINT still pending goes to the restored handler
    if received:
        signal.raise_signal(signal.SIGINT)


def _terminate_workers(pool: ProcessPoolExecutor) -> None:
    """Stop the workers mid-task (a task may never end: a hung library call); Python 3.14 has this built in.

    A worker killed while it wrote its result leaves half a message in the result pipe, and the
    pool's manager thread would wait for the rest forever (and `shutdown`, and the interpreter's
    exit, with it). Once every worker is gone, closing the parent's copy of the pipe's write end
    leaves no writer, so that wait ends (end of file) and the pool shuts down.
    """
    processes = list((pool._processes or {}).values())  # private before 3.14
    terminate = getattr(pool, "terminate_workers", None)
    if terminate is not None:
        terminate()
    for process in processes:
        process.kill()
    for process in processes:
        process.join(_POLL_S * 25)
    pool._result_queue._writer.close()


def _start_worker(parent: int, initializer: Callable[..., None] | None, initargs: tuple) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with(parent)
    if initializer is not None:
        initializer(*initargs)


def _die_with(parent: int) -> None:
    """Linux: ask the kernel to SIGKILL this worker when the parent dies (elsewhere: no-op)."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return
    prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)
