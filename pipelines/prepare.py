"""Stage `prepare@<dataset>`: landmarks, canonical crop and face mask for every photo of the protocol.

CelebA: every image of the identities in the protocol's identity list (data.celeba.identity_list).
LFW: every image that pairs.txt names.

Writes data/prepared/<dataset>/ (see facedata.prepared for the layout) and a summary.json
with the count of each status. A re-run reuses rows whose photo bytes and settings are
unchanged, so only new or changed photos are processed.

    python -m pipelines.prepare celeba|lfw
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from facedata import datasets, protocol
from facedata.atomic import atomic_path, write_json, write_table
from facedata.crops import PrepareConfig, prepare_face
from facedata.errors import DataError
from facedata.images import ImageError
from facedata.landmarks import LandmarkDetector
from facedata.prepared import crop_relpath, mask_relpath
from pipelines import stage
from pipelines.config import Params
from pipelines.layout import Layout, require


@dataclass(frozen=True)
class Job:
    key: str
    identity: str
    path: Path
    sha1: str


def protocol_images(dataset: str, source: dict, params: Params) -> dict[str, str]:
    """{key: identity} for every photo the protocol uses."""
    if dataset == "celeba":
        identities = datasets.read_identities(Path(source["identity_file"]))
        listed = set(protocol.identity_list(params.data.celeba, identities, source.get("identity_list_file")))
        return {key: identity for key, identity in identities.items() if identity in listed}
    pairs = datasets.parse_pairs(Path(source["pairs_file"]))
    keys = {key for pair in pairs for key in (pair.first, pair.second)}
    return {key: datasets.lfw_identity(key) for key in keys}


_worker: tuple[PrepareConfig, LandmarkDetector, Path] | None = None


def _init_worker(config: PrepareConfig, out: Path) -> None:
    global _worker
    _worker = (config, LandmarkDetector(config.detect_upsample, config.fallback_detector), out)


def _save_png(array: np.ndarray, target: Path) -> None:
    with atomic_path(target) as tmp:
        Image.fromarray(array).save(tmp, format="PNG", compress_level=1)


def process(job: Job) -> dict:
    """Prepare one photo and write its crop and mask; returns its index row."""
    config, detector, out = _worker
    row = {
        "key": job.key,
        "identity": job.identity,
        "sha1": job.sha1,
        "config": config.fingerprint(),
        "status": "ok",
        "detail": "",
        "width": 0,
        "height": 0,
        "n_faces": 0,
        "detector": "",
        "box": None,
        "landmarks": None,
        "landmarks_image": None,
        "transform": None,
    }
    try:
        face = prepare_face(job.path, config, detector)
    except ImageError as error:
        row.update(status=error.status, detail=error.detail)
        return row
    except Exception as error:  # a bug or a library failure on one photo must not stop the stage
        row.update(status="error", detail=f"{type(error).__name__}: {error}")
        return row
    _save_png(face.crop, out / crop_relpath(job.key))
    _save_png(face.mask.astype(np.uint8) * 255, out / mask_relpath(job.key))
    row.update(
        width=face.image_size[0],
        height=face.image_size[1],
        n_faces=face.n_faces,
        detector=face.detector,
        box=face.box.tolist(),
        landmarks=face.landmarks.ravel().tolist(),
        landmarks_image=face.landmarks_image.ravel().tolist(),
        transform=face.transform.as_list(),
    )
    return row


def sha1_of(path: Path) -> str:
    try:
        return hashlib.sha1(path.read_bytes()).hexdigest()
    except OSError:
        return ""


def run(params: Params, layout: Layout, dataset: str) -> dict:
    started = time.perf_counter()
    config = params.prepare
    workers = config.workers or os.cpu_count() or 1
    source = json.loads(require(layout.source(dataset), f"download@{dataset}").read_text())
    images_dir = Path(source["images_dir"])
    out = layout.prepared(dataset)
    previous = _previous_rows(out, config)
    wanted = protocol_images(dataset, source, params)

    rows, jobs = [], []
    for key, identity in tqdm(sorted(wanted.items()), desc=f"{dataset}: hashing", unit="img", disable=None):
        path = images_dir / key
        digest = sha1_of(path)
        cached = previous.get(key)
        if cached is not None and digest and cached["sha1"] == digest and cached["identity"] == identity:
            rows.append(cached)
        else:
            jobs.append(Job(key, identity, path, digest))
    print(f"{dataset}: {len(wanted)} photos, {len(rows)} unchanged, {len(jobs)} to process on {workers} workers")

    if jobs:
        context = multiprocessing.get_context("fork" if hasattr(os, "fork") else "spawn")
        with context.Pool(min(workers, len(jobs)), initializer=_init_worker, initargs=(config, out)) as pool:
            for row in tqdm(
                pool.imap_unordered(process, jobs, chunksize=4),
                total=len(jobs),
                desc=f"{dataset}: preparing",
                unit="img",
                disable=None,
            ):
                rows.append(row)

    index = pd.DataFrame(rows).sort_values("key").reset_index(drop=True)
    _fail_on_systematic_errors(index, len(jobs))
    _remove_stale_files(out, set(index.loc[index["status"] == "ok", "key"]))
    write_table(out / "index.parquet", index)
    statuses = Counter(index["status"])
    found_by = index.loc[index["status"] == "ok", "detector"].value_counts()
    summary = {
        "dataset": dataset,
        "detectors": {name: int(count) for name, count in found_by.items()},
        "photos": len(index),
        "status": dict(sorted(statuses.items())),
        "ok_share": round(statuses.get("ok", 0) / max(len(index), 1), 6),
        "several_faces": int((index["n_faces"] > 1).sum()),
        "processed": len(jobs),
        "reused": len(index) - len(jobs),
        "seconds": round(time.perf_counter() - started, 2),
        "config": config.fingerprint(),
    }
    write_json(out / "summary.json", summary)
    print(
        f"{dataset}: "
        + ", ".join(f"{status} {count}" for status, count in sorted(statuses.items()))
        + f"; {summary['several_faces']} photos with several faces (largest, most central kept)"
    )
    return summary


def _fail_on_systematic_errors(index: pd.DataFrame, processed: int) -> None:
    """Bad photos get statuses; an unexpected exception on most photos is a bug, and stops the stage."""
    errors = index[index["status"] == "error"]
    if processed and len(errors) > processed / 2:
        raise DataError(
            f"{len(errors)} of {processed} photos failed with an unexpected error, e.g. "
            f"{errors['key'].iloc[0]}: {errors['detail'].iloc[0]}"
        )
    for row in errors.itertuples():
        print(f"unexpected error on {row.key}: {row.detail}")


def _previous_rows(out: Path, config: PrepareConfig) -> dict[str, dict]:
    """Rows of an earlier run with the same settings whose outputs are still on disk.

    Rows with an unexpected error are never reused: the error says nothing about the photo.
    """
    index_path = out / "index.parquet"
    if not index_path.is_file():
        return {}
    previous = pd.read_parquet(index_path)
    previous = previous[previous["config"] == config.fingerprint()]
    rows = {}
    for row in previous.to_dict("records"):
        if row["status"] == "error":
            continue
        if row["status"] != "ok" or (
            (out / crop_relpath(row["key"])).is_file() and (out / mask_relpath(row["key"])).is_file()
        ):
            rows[row["key"]] = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in row.items()}
    return rows


def _remove_stale_files(out: Path, keep: set[str]) -> None:
    wanted = {crop_relpath(k) for k in keep} | {mask_relpath(k) for k in keep}
    for folder in ("crops", "masks"):
        for path in (out / folder).rglob("*.png") if (out / folder).is_dir() else ():
            if path.relative_to(out).as_posix() not in wanted:
                path.unlink()


def main(argv: list[str] | None = None, layout: Layout = Layout()) -> None:
    stage.main(run, "prepare", __doc__, item="dataset", choices=datasets.DATASETS, argv=argv, layout=layout)


if __name__ == "__main__":
    main()
