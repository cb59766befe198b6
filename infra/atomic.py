"""Atomic writes: a reader sees either the old file or the complete new one, never a partial one."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

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
    finally:
        tmp_path.unlink(missing_ok=True)


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
