"""Features cached on disk by content, and a process pool for the CPU-bound dlib work.

A set of images is cached as one array under `<cache>/<extractor>-v<version>/<digest>.npz`,
where the digest covers every image's bytes (plus whatever else the extractor reads, such as
the landmarks it aligns with) in order. The extractor name carries the digest of any weights
it uses, and the version is the producing code's: each module bumps its own when a change
alters what it computes. The same real crops therefore yield their features once per
dataset, reused by every method and every run, and any changed byte, weight or computation
invalidates them. The array is stored with the SHA-256 of its own bytes and checked against it
on every read: a changed or truncated file is computed again, never trusted.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from infra.atomic import atomic_path
from infra.pool import imap_unordered


def content_digest(path: Path, extra: bytes = b"") -> str:
    """SHA-1 of a file's bytes followed by `extra`."""
    digest = hashlib.sha1(Path(path).read_bytes())
    digest.update(extra)
    return digest.hexdigest()


def cached_features(cache: Path, extractor: str, version: int, digests: Sequence[str],
                    compute: Callable[[], np.ndarray]) -> np.ndarray:
    """`compute()` (one row per digest), or the array stored for exactly these digests by `extractor` at `version`.

    A stored array is used only when the SHA-256 stored with it matches its bytes and it has a row per
    digest; otherwise it is computed again, with one line naming the file and why.
    """
    key = hashlib.sha1("\n".join(digests).encode()).hexdigest()
    path = Path(cache) / f"{extractor}-v{version}" / f"{key}.npz"
    if path.is_file():
        features, problem = _read_verified(path, len(digests))
        if problem is None:
            return features
        tqdm.write(f"recomputing {path}: {problem}")
    features = np.asarray(compute())
    if len(features) != len(digests):
        raise RuntimeError(f"{extractor}: computed {len(features)} rows for {len(digests)} images")
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, features=features, sha256=np.array(array_digest(features)))
    return features


def array_digest(array: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and bytes: any changed value, type or shape changes it."""
    digest = hashlib.sha256(f"{array.dtype.str} {array.shape}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def _read_verified(path: Path, rows: int) -> tuple[np.ndarray | None, str | None]:
    """(the stored array, None), or (None, why it cannot be trusted)."""
    try:
        with np.load(path) as stored:
            features, recorded = stored["features"], str(stored["sha256"])
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as error:
        return None, f"unreadable ({type(error).__name__}: {error})"
    if array_digest(features) != recorded:
        return None, "its values do not match the SHA-256 stored with them (changed after it was written)"
    if len(features) != rows:
        return None, f"it has {len(features)} rows for {rows} images"
    return features, None


def worker_count(workers: int) -> int:
    """0 means every core this process may use."""
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    return workers or len(os.sched_getaffinity(0))


def map_parallel(function: Callable, items: Sequence, workers: int) -> list:
    """`[function(item) for item in items]`, spread over processes when workers > 1.

    `function` must be a module-level function; it keeps its own models per process. A worker
    that dies (e.g. killed by the out-of-memory killer) raises WorkerDiedError naming its item.
    """
    workers = min(worker_count(workers), len(items))
    if workers <= 1:  # dlib's HOG detector and face descriptor stay fork-safe after running here (measured)
        return [function(item) for item in items]
    results = [None] * len(items)
    for position, result in imap_unordered(function, items, workers, describe=_label):
        results[position] = result
    return results


def _label(item) -> str:
    """What an error names for an item: the image path (items are paths or (path, extra) tuples)."""
    return str(item[0] if isinstance(item, tuple) else item)
