"""One run of a stage at a time: a lock file in the stage's output folder.

`stage_lock(folder, label)` holds an exclusive `flock` on `<folder>/.<label>.lock` for the run
and removes the file at the end. The operating system drops the lock when its process dies, so
the lock file of a killed run (SIGKILL, power loss) is simply taken over by the next run; the
process id written into the file only serves the message of a run that is refused.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from infra.errors import SuiteError


class StageBusyError(SuiteError):
    """The same stage is running in another process; the message names it and its lock file."""


def lock_path(folder: Path, label: str) -> Path:
    """The lock file of stage `label` (`prepare@celeba`); .dvcignore and .gitignore hide `.*.lock`."""
    return Path(folder) / f".{label}.lock"


@contextmanager
def stage_lock(folder: Path, label: str) -> Iterator[None]:
    """Hold the lock of stage `label` in `folder` for the block; a StageBusyError if another process holds it."""
    path = lock_path(folder, label)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = _acquire(path)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # before the lock is released: a waiting process then finds a fresh file
        os.close(descriptor)


def _acquire(path: Path) -> int:
    while True:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 64, 0).decode(errors="replace").strip() or "?"
            os.close(descriptor)
            raise StageBusyError(f"already running in process {holder} (lock {path}): wait for it to finish, or "
                                 "stop it, before running it again") from None
        # The file may have been removed (by the run that held it) between our open and our lock: lock it anew.
        if _same_file(descriptor, path):
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
            return descriptor
        os.close(descriptor)


def _same_file(descriptor: int, path: Path) -> bool:
    try:
        return os.fstat(descriptor).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False
