"""The prepare engine: every photo of a protocol to a crop, a mask and an index row, resumably.

    summary = prepare_photos(config, images_dir, out, {key: identity}, label="celeba", workers=8)

writes `out` in the layout `facedata.prepared` reads, plus summary.json.

Nothing lost: workers detect and crop; the parent alone writes files. It writes each crop and
mask atomically, puts the SHA-1 of their bytes in the photo's row and journals the rows
(`infra.journal`) at most every JOURNAL_INTERVAL_S as photos finish, and all of them when
the run stops on Ctrl-C or a dead worker. So a stopped run keeps what it finished (a SIGKILL
loses the photos finished since the last part), and the next run does only the rest.

Nothing trusted that should not be: a row is reused only when its settings fingerprint
(settings, processing version, libraries), its photo's bytes and its crop's and mask's bytes all
still match; anything else is done again. A row with an unexpected error is never reused: each
run retries it once.

Photos are read only from inside the image folder: a photo whose real path (links resolved)
lies outside it gets status `outside_root` and is not read.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections import Counter, defaultdict
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from facedata.crops import PrepareConfig, prepare_face
from facedata.datasets import key_problem
from facedata.images import ImageError, png_bytes
from facedata.landmarks import LandmarkDetector
from facedata.prepared import crop_relpath, mask_relpath
from infra.atomic import remove_inside, remove_leftovers, write_bytes, write_json
from infra.errors import DataError
from infra.journal import Journal
from infra.pool import WorkerDiedError, imap_unordered

#: Least seconds between journal parts: fewer files, while a SIGKILL loses little finished work.
JOURNAL_INTERVAL_S = 0.5


@dataclass(frozen=True)
class Job:
    key: str
    identity: str
    root: Path  # the image folder, links resolved
    sha1: str  # of the photo's bytes; "" when missing or outside the folder


def prepare_photos(config: PrepareConfig, images_dir: Path, out: Path, wanted: dict[str, str], label: str,
                   workers: int) -> dict:
    """Prepare every photo of `wanted` ({key: identity}) into `out`; returns the summary it writes."""
    started = time.perf_counter()
    _check_keys(wanted)
    if out.is_dir():
        remove_leftovers(out)
    journal = Journal(out / "index.parquet")
    reused, jobs, retried = _plan(wanted, images_dir.resolve(), out, journal, config.fingerprint(), label)
    print(f"{label}: {len(wanted)} photos, {len(reused)} unchanged, {len(jobs)} to process"
          + (f" on {min(workers, len(jobs))} workers" if jobs else ""))
    finished = _process(jobs, config, out, journal, workers, label)
    index = pd.DataFrame([*reused, *finished]).sort_values("key").reset_index(drop=True)
    _stop_on_systematic_errors(index, [job.key for job in jobs], retried)
    _remove_stale_files(out, set(index.loc[index["status"] == "ok", "key"]))
    journal.fold(index)
    summary = _summary(index, label, config, processed=len(jobs), retried=len(retried),
                       seconds=time.perf_counter() - started)
    write_json(out / "summary.json", summary)
    statuses = ", ".join(f"{status} {count}" for status, count in summary["status"].items())
    print(f"{label}: {statuses}; {summary['several_faces']} photos with several faces (largest, most central kept)")
    return summary


def _check_keys(wanted: dict[str, str]) -> None:
    """Keys name files below the image folder, and no two may share an output file on any file system."""
    if not wanted:
        raise DataError("the protocol names no photo to prepare: check the dataset's protocol file")
    for key in wanted:
        problem = key_problem(key)
        if problem:
            raise DataError(f"protocol key {key!r}: the key {problem}")
    by_folded_case = defaultdict(list)
    for key in wanted:
        by_folded_case[key.casefold()].append(key)
    clashes = [sorted(keys) for keys in by_folded_case.values() if len(keys) > 1]
    if clashes:
        raise DataError(f"photos {clashes[0][0]} and {clashes[0][1]} differ only in letter case: their crops would "
                        "be one file on a case-insensitive file system (macOS, Windows); rename one")


def _plan(wanted: dict[str, str], root: Path, out: Path, journal: Journal, fingerprint: str, label: str
          ) -> tuple[list[dict], list[Job], set[str]]:
    """(rows to reuse, jobs to run, keys of jobs that retry an earlier unexpected error)."""
    table, parts = journal.rows()
    history = defaultdict(list)  # key -> rows, oldest first
    for row in [*table, *parts]:
        history[row["key"]].append(row)
    reused, jobs, retried = [], [], set()
    for key, identity in tqdm(sorted(wanted.items()), desc=f"{label}: checking", unit="img", disable=None):
        try:
            digest = _sha1(photo_path(root, key))
        except ImageError:  # outside the folder: not read; the worker records why
            digest = ""
        row = _reusable(history[key], digest, fingerprint, out)
        if row is None:
            jobs.append(Job(key, identity, root, digest))
            if any(_made_by(old, digest, fingerprint) and old["status"] == "error" for old in history[key]):
                retried.add(key)
            continue
        reused.append({**row, "identity": identity})
    # Parts of killed runs collapse into one, without the rows of other settings or of photos no longer wanted.
    journal.restart([row for row in parts if row.get("config") == fingerprint and row["key"] in wanted])
    return reused, jobs, retried


def _made_by(row: dict, digest: str, fingerprint: str) -> bool:
    return bool(digest) and row.get("sha1") == digest and row.get("config") == fingerprint


def _reusable(rows: list[dict], digest: str, fingerprint: str, out: Path) -> dict | None:
    """The newest row that these photo bytes and settings made and whose files are still as written."""
    for row in reversed(rows):
        if not _made_by(row, digest, fingerprint) or row["status"] == "error":
            continue
        if row["status"] != "ok" or (_sha1(out / crop_relpath(row["key"])) == row.get("crop_sha1")
                                     and _sha1(out / mask_relpath(row["key"])) == row.get("mask_sha1")):
            return row
    return None


def _sha1(path: Path) -> str:
    try:
        return hashlib.sha1(path.read_bytes()).hexdigest()
    except OSError:
        return ""


def photo_path(root: Path, key: str) -> Path:
    """The photo `key` names below `root` (links resolved); ImageError `outside_root` if its real path leaves `root`."""
    real = (root / key).resolve()
    if not real.is_relative_to(root):
        raise ImageError("outside_root", f"{root / key} leads to {real}, outside {root}; "
                                         "copy the photo into the dataset folder")
    return real


# --- the work --------------------------------------------------------------------------------

_worker: tuple[PrepareConfig, str, LandmarkDetector] | None = None


@functools.cache
def _loaded_detector(upsample: int, fallback: str | None) -> LandmarkDetector:
    """One detector per process and settings: loaded in the parent, forked workers share it (seconds saved each)."""
    return LandmarkDetector(upsample, fallback).load()


def _init_worker(config: PrepareConfig) -> None:
    global _worker
    _worker = (config, config.fingerprint(), _loaded_detector(config.detect_upsample, config.fallback_detector))


def process(job: Job) -> tuple[dict, bytes | None, bytes | None]:
    """Prepare one photo: its index row, and its crop and mask as PNG bytes (None unless ok)."""
    config, fingerprint, detector = _worker
    row = {"key": job.key, "identity": job.identity, "sha1": job.sha1, "config": fingerprint,
           "status": "ok", "detail": "", "width": 0, "height": 0, "n_faces": 0, "detector": "", "box": None,
           "landmarks": None, "landmarks_image": None, "transform": None, "crop_sha1": "", "mask_sha1": ""}
    try:
        face = prepare_face(photo_path(job.root, job.key), config, detector)
    except ImageError as error:
        row.update(status=error.status, detail=error.detail)
        return row, None, None
    except Exception as error:  # a bug or a library failure on one photo must not stop the stage
        row.update(status="error", detail=" ".join(f"{type(error).__name__}: {error}".split()))
        return row, None, None
    row.update(width=face.image_size[0], height=face.image_size[1], n_faces=face.n_faces, detector=face.detector,
               box=face.box.tolist(), landmarks=face.landmarks.ravel().tolist(),
               landmarks_image=face.landmarks_image.ravel().tolist(), transform=face.transform.as_list())
    return row, png_bytes(face.crop), png_bytes(face.mask.astype(np.uint8) * 255)


def _process(jobs: list[Job], config: PrepareConfig, out: Path, journal: Journal, workers: int, label: str
             ) -> list[dict]:
    """Run the jobs; the parent writes every crop and mask and journals the rows as they finish."""
    if not jobs:
        return []
    _loaded_detector(config.detect_upsample, config.fallback_detector)  # before the workers fork
    finished, pending, journalled_at = [], [], time.monotonic()
    results = imap_unordered(process, jobs, workers, initializer=_init_worker, initargs=(config,),
                             describe=lambda job: job.key)
    try:
        with closing(results), tqdm(total=len(jobs), desc=f"{label}: preparing", unit="img", disable=None) as bar:
            for _, (row, crop, mask) in results:
                if crop is not None:
                    row.update(crop_sha1=_write(out / crop_relpath(row["key"]), crop),
                               mask_sha1=_write(out / mask_relpath(row["key"]), mask))
                finished.append(row)
                pending.append(row)
                bar.update()
                if time.monotonic() - journalled_at >= JOURNAL_INTERVAL_S:
                    journal.append(pending)
                    pending, journalled_at = [], time.monotonic()
    except WorkerDiedError as error:
        raise WorkerDiedError(f"{error}; the {len(finished)} photos finished before are kept: re-run to continue "
                              "(fewer prepare.workers need less memory)") from None
    finally:
        journal.append(pending)
    return finished


def _write(path: Path, data: bytes) -> str:
    write_bytes(path, data)
    return hashlib.sha1(data).hexdigest()


# --- the end of a run ------------------------------------------------------------------------

def _stop_on_systematic_errors(index: pd.DataFrame, processed: list[str], retried: set[str]) -> None:
    """Bad photos get statuses; unexpected errors on most photos are a bug, and stop the stage.

    Most is judged among the photos tried for the first time in this run (a retried photo failed
    before and says nothing new) and among all photos; each photo counts once.
    """
    errors = index[index["status"] == "error"]
    fresh = [key for key in processed if key not in retried]
    fresh_errors = int(errors["key"].isin(fresh).sum())
    if (fresh and fresh_errors > len(fresh) / 2) or len(errors) > len(index) / 2:
        raise DataError(
            f"{len(errors)} of {len(index)} photos failed with an unexpected error ({fresh_errors} of the "
            f"{len(fresh)} tried for the first time), e.g. {errors['key'].iloc[0]}: {errors['detail'].iloc[0]}. "
            "So many failures point to a bug or a broken installation, not to bad photos; finished photos are "
            "kept and failed ones are retried on the next run")
    for row in errors.itertuples():
        print(f"unexpected error on {row.key} (retried on the next run): {row.detail}")


def _remove_stale_files(out: Path, keep: set[str]) -> None:
    wanted = {crop_relpath(key) for key in keep} | {mask_relpath(key) for key in keep}
    for folder in ("crops", "masks"):
        for path in (out / folder).rglob("*.png") if (out / folder).is_dir() else ():
            if path.relative_to(out).as_posix() not in wanted:
                remove_inside(path, [out])  # never a file a link inside crops/ leads to


def _summary(index: pd.DataFrame, label: str, config: PrepareConfig, processed: int, retried: int,
             seconds: float) -> dict:
    statuses = Counter(index["status"])
    found_by = index.loc[index["status"] == "ok", "detector"].value_counts()
    return {
        "dataset": label,
        "detectors": {name: int(count) for name, count in found_by.items()},
        "photos": len(index),
        "status": dict(sorted(statuses.items())),
        "ok_share": round(statuses.get("ok", 0) / len(index), 6),
        "several_faces": int((index["n_faces"] > 1).sum()),
        "processed": processed,
        "retried_errors": retried,
        "reused": len(index) - processed,
        "seconds": round(seconds, 2),
        "config": config.fingerprint(),
    }
