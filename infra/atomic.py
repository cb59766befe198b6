"""Atomic writes: a reader sees either the old file or the complete new one, never a partial one.

Folders are replaced in three steps (`swap_in`): the old one moves aside, the new one moves in,
the old one is removed. A process killed between any two steps leaves a complete folder, old or
new, and `finish_swap` (which `swap_in` calls first) completes or undoes what it left. Removal
(`remove_inside`) refuses any path that is not strictly inside the folders its caller owns.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from infra.errors import SuiteError

# mkstemp creates owner-only files; outputs get the permissions a plain open() would give.
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `target`; rename it onto `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, target)
    except OSError as error:
        if error.errno == errno.ENOSPC:
            raise DiskFullError(target) from None
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


class DiskFullError(SuiteError):
    """No space left where a file was being written; the message names the file and the space that is free."""

    def __init__(self, path: Path):
        folder = next((parent for parent in [path, *path.absolute().parents] if parent.exists()), Path("/"))
        free = shutil.disk_usage(folder).free
        super().__init__(f"no space left on the device writing {path} ({free / 2**20:,.1f} MiB free in {folder}): "
                         "nothing half-written was kept; free some space and re-run to continue")


def remove_leftovers(folder: str | os.PathLike) -> int:
    """Delete the temporary files that `atomic_path` calls in `folder` left when their process was killed.

    Returns how many were removed. Run it only while no other process writes into `folder`.
    """
    leftovers = [path for path in Path(folder).rglob(".*.tmp") if path.is_file()]
    for path in leftovers:
        path.unlink()
    return len(leftovers)


def write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def _finite(obj: Any) -> Any:
    """NaN and infinities become null: JSON has no such numbers (json.dumps would write bare NaN)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {key: _finite(value) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(value) for value in obj]
    return obj


def write_json(target: str | os.PathLike, obj: Any) -> None:
    """Standard JSON (NaN as null), indented, keys sorted."""
    text = json.dumps(_finite(obj), indent=2, sort_keys=True, default=str, allow_nan=False)
    write_bytes(target, (text + "\n").encode())


def write_table(target: str | os.PathLike, frame: pd.DataFrame) -> None:
    """Write a DataFrame as CSV or Parquet, chosen by the target's suffix."""
    target = Path(target)
    with atomic_path(target) as tmp:
        if target.suffix == ".parquet":
            frame.to_parquet(tmp, index=False)
        elif target.suffix == ".csv":
            frame.to_csv(tmp, index=False)
        else:
            raise ValueError(f"write_table: unsupported suffix {target.suffix!r} for {target}")


class OutsideError(SuiteError):
    """A path that would be removed or replaced lies outside every folder its stage owns."""


def remove_inside(path: str | os.PathLike, roots: Sequence[str | os.PathLike]) -> None:
    """Delete `path` (a file, a link or a folder tree; nothing if absent) if it lies strictly inside one of `roots`.

    The path is judged after `..` and links in its parent folders are resolved; a link itself is
    removed, never what it points to. Anything else raises OutsideError and nothing is deleted.
    """
    absolute = Path(os.path.normpath(os.path.abspath(path)))
    where = absolute.parent.resolve() / absolute.name
    inside = [Path(root).resolve() for root in roots if where.is_relative_to(Path(root).resolve())]
    if not inside or where in inside or absolute.name in ("", ".", ".."):
        owned = ", ".join(str(root) for root in roots)
        raise OutsideError(f"refusing to remove {path}: it is not inside the folders this stage writes ({owned})")
    if where.is_symlink() or where.is_file():
        where.unlink()
    elif where.is_dir():
        shutil.rmtree(where)


def aside_path(target: Path) -> Path:
    """Where `swap_in` keeps the old folder while the new one moves in (.dvcignore hides `.*.partial`)."""
    return target.parent / f".{target.name}.previous.partial"


def finish_swap(target: Path, remove: Callable[[Path], None] = shutil.rmtree) -> None:
    """Complete or undo a swap that a killed process left at `target`.

    The new folder in place: the old one aside is removed. No folder in place: the old one moves back.
    """
    aside = aside_path(target)
    if aside.exists():
        if target.exists():
            remove(aside)
        else:
            os.replace(aside, target)


def swap_in(new: Path, target: Path, remove: Callable[[Path], None] = shutil.rmtree) -> None:
    """Replace folder `target` (if any) by folder `new` (on the same file system); see the module doc."""
    finish_swap(target, remove)
    aside = aside_path(target)
    if target.exists():
        os.replace(target, aside)
    os.replace(new, target)
    if aside.exists():
        remove(aside)
