"""Features cached on disk by content, and a process pool for the CPU-bound dlib work.

A set of images is cached as one array under `<cache>/<extractor>-v<version>/<digest>.npy`,
where the digest covers every image's bytes (plus whatever else the extractor reads, such as
the landmarks it aligns with) in order. The extractor name carries the digest of any weights
it uses, and the version is the producing code's: each module bumps its own when a change
alters what it computes. The same real crops therefore yield their features once per
dataset, reused by every method and every run, and any changed byte, weight or computation
invalidates them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from infra.atomic import atomic_path
from infra.pool import imap_unordered


def content_digest(path: Path, extra: bytes = b"") -> str:
    """SHA-1 of a file's bytes followed by `extra`."""
    digest = hashlib.sha1(Path(path).read_bytes())
    digest.update(extra)
    return digest.hexdigest()


def cached_features(cache: Path, extractor: str, version: int, digests: Sequence[str],
                    compute: Callable[[], np.ndarray]) -> np.ndarray:
    """`compute()` (one row per digest), or the array stored for exactly these digests by `extractor` at `version`."""
    key = hashlib.sha1("\n".join(digests).encode()).hexdigest()
    path = Path(cache) / f"{extractor}-v{version}" / f"{key}.npy"
    if path.is_file():
        features = np.load(path)
        if len(features) == len(digests):
            return features
    features = np.asarray(compute())
    if len(features) != len(digests):
        raise RuntimeError(f"{extractor}: computed {len(features)} rows for {len(digests)} images")
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, features)
    return features


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
