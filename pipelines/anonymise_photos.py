"""Anonymise every face in a folder of photos with any method of params.yaml's `methods`.

    python -m pipelines.anonymise_photos IN_DIR OUT_DIR --method blur [--overwrite] [--device cpu|cuda]

Each photo below IN_DIR (.jpg .jpeg .png .bmp .tif .tiff .webp, any depth) is searched for
faces as `prepare` searches (dlib HOG with its CNN fallback, on a copy at most
`prepare.detect_max_side` large, in `prepare.workers` processes); every face found is framed in
the canonical 220x180 frame at the photo's full resolution, anonymised, and pasted back through
its transform with the face mask (`facedata.pasteback`). The photo is written, upright and
without its metadata, under the same relative path in OUT_DIR, in its own format;
OUT_DIR/faces.csv has one row per photo: path, faces_found, anonymised, failed, status (ok,
exists, no_face, unreadable, too_large, too_small, missing, failed) and reason. A photo that
cannot be used is a row, never a stop, and is not written: a photo is written only with every
face found anonymised.

Faces are numbered in the run's order (photos by path, faces left to right). Methods that need
more than the face:
- AnonyGAN (trained or released) takes each face's appearance from a condition face: the main
  face of each photo in `--conditions DIR`, cycled (face k gets condition k mod M).
- CIAGAN renders each face as a training identity, by its authors' next-identity rule with every
  face its own identity: face k becomes training identity (k + 1) mod N.

Nothing is ever written into IN_DIR, and an existing output is kept unless `--overwrite`.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

import pipelines
from baselines import catalogue
from baselines.interface import Anonymiser, FaceBatch, RunContext, check_output, create
from facedata.crops import PrepareConfig, PreparedFace, prepare_face
from facedata.datasets import list_images
from facedata.images import ImageError, decode
from facedata.landmarks import LandmarkDetector
from facedata.pasteback import FEATHER, paste_back
from facedata.photo_faces import FramedFace, find_boxes, frame_faces
from infra.atomic import atomic_path, write_table
from infra.errors import MissingInputError, ParamsError, SuiteError
from infra.pool import imap_unordered
from pipelines import config, stage
from pipelines.config import Params
from pipelines.layout import Layout

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
REPORT = "faces.csv"
#: The RunContext dataset of a folder of photos (no benchmark dataset).
DATASET = "photos"


@dataclass(frozen=True)
class PhotoOptions:
    method: str  # a key of params.yaml `methods`
    feather: float = FEATHER  # blend width at the mask's edge, crop pixels; 0: a hard edge
    overwrite: bool = False  # replace outputs that exist
    device: Literal["cpu", "cuda"] | None = None  # the anonymiser's device; None: CUDA when available
    conditions: Path | None = None  # photos whose main faces condition AnonyGAN
    jpeg_quality: int = 95  # JPEG and WebP outputs


@dataclass
class PhotoRow:
    path: str  # relative to IN_DIR (and OUT_DIR)
    faces_found: int = 0
    anonymised: int = 0
    failed: int = 0
    status: str = "ok"
    reason: str = ""


def anonymise_folder(in_dir: Path, out_dir: Path, params: Params, layout: Layout, options: PhotoOptions
                     ) -> pd.DataFrame:
    """Anonymise every photo below `in_dir` into `out_dir`; the report's rows (also written to OUT_DIR/faces.csv)."""
    started = time.perf_counter()
    check_folders(in_dir, out_dir)
    method_class = _method_class(params, options)
    detector = LandmarkDetector(params.prepare.detect_upsample, params.prepare.fallback_detector).load()
    conditions = _conditions(options.conditions, params.prepare, detector) if method_class.needs_condition_faces else []
    rows, boxes = [PhotoRow(relpath) for relpath in photos(in_dir)], {}
    for row in rows:
        if (out_dir / row.path).exists() and not options.overwrite:
            row.status, row.reason = "exists", f"{out_dir / row.path} exists: pass --overwrite to replace it"
    wanted = [row for row in rows if row.status == "ok"]
    found = in_workers(_boxes, [in_dir / row.path for row in wanted], params.prepare, detector, "photos: finding faces")
    for row, result in zip(wanted, found, strict=True):
        if isinstance(result, tuple):
            row.status, row.reason = result
        else:
            boxes[row.path], row.faces_found = result, len(result)
    if boxes:  # the identity order (CIAGAN's target rule) needs every face of the run: found first
        labels = [face_label(relpath, face) for relpath, found in boxes.items() for face in range(len(found))]
        run = _PhotoRun(in_dir, out_dir, params.prepare, detector, _anonymiser(params, layout, options, labels),
                        options, conditions)
        first_face = 0
        for row in tqdm([row for row in rows if row.path in boxes], desc=f"photos: {options.method}",
                        unit="photo", disable=None):
            run.anonymise(row, boxes[row.path], first_face)
            first_face += row.faces_found
    report = pd.DataFrame([asdict(row) for row in rows], columns=[field.name for field in fields(PhotoRow)])
    write_table(out_dir / REPORT, report)
    counts = report["status"].value_counts()
    print(f"photos: {len(report)} photos, {int(report['anonymised'].sum())} of {int(report['faces_found'].sum())} "
          f"faces anonymised with {options.method} in {time.perf_counter() - started:.1f} s; "
          + ", ".join(f"{status} {count}" for status, count in counts.items()) + f"; see {out_dir / REPORT}")
    return report


def check_folders(in_dir: Path, out_dir: Path) -> None:
    """IN_DIR exists, and OUT_DIR neither is it, nor lies inside it, nor holds it (outputs could land in it)."""
    if not in_dir.is_dir():
        raise MissingInputError(f"{in_dir} is not a folder of photos")
    source, target = in_dir.resolve(), out_dir.resolve()
    if target.is_relative_to(source) or source.is_relative_to(target):
        raise SuiteError(f"OUT_DIR {out_dir} must lie outside IN_DIR {in_dir} (and not contain it): "
                         "nothing is ever written into the input folder")


def photos(in_dir: Path) -> list[str]:
    """The photos below `in_dir` as sorted relative POSIX paths."""
    return list_images(in_dir, suffixes=PHOTO_SUFFIXES)


def face_label(relpath: str, index: int) -> str:
    """A face's identity in the run: every face is its own person."""
    return f"{relpath}#{index}"


def _method_class(params: Params, options: PhotoOptions) -> type[Anonymiser]:
    """The method's anonymiser class, refused in one line where it cannot anonymise new photos as asked."""
    name = params.method(options.method).anonymiser_name(options.method)
    method_class = catalogue.entry(name).load()
    if method_class.reads_stored_images:
        raise ParamsError(f"method {options.method!r} returns crops another program wrote for the benchmark's "
                          "pairs; it cannot anonymise new photos")
    if method_class.needs_condition_faces and options.conditions is None:
        raise ParamsError(f"method {options.method!r} needs condition faces: pass --conditions DIR, a folder of "
                          "photos of other people whose faces lend the anonymised faces their appearance")
    if options.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ParamsError("--device cuda: no CUDA device is available here; use --device cpu")
    return method_class


def _conditions(folder: Path, prepare: PrepareConfig, detector: LandmarkDetector) -> list[PreparedFace]:
    """The main face of every photo in `folder`, as `prepare` frames it."""
    if not folder.is_dir():
        raise MissingInputError(f"--conditions {folder} is not a folder of photos")
    relpaths, faces = photos(folder), []
    for relpath, result in zip(relpaths, in_workers(_main_face, [folder / relpath for relpath in relpaths], prepare,
                                                    detector, "conditions: finding faces"), strict=True):
        if isinstance(result, tuple):
            print(f"conditions: {relpath} skipped ({result[0]}: {result[1]})")
        else:
            faces.append(result)
    if not faces:
        raise MissingInputError(f"--conditions {folder}: no face found in any of its photos")
    return faces


# --- finding faces, in worker processes ----------------------------------------------------------------------------

#: A worker's prepare settings and detector: loaded by the parent before the workers fork, shared by them.
_worker: tuple[PrepareConfig, LandmarkDetector] | None = None


def _start_worker(prepare: PrepareConfig, detector: LandmarkDetector) -> None:
    global _worker
    _worker = (prepare, detector)


def _boxes(path: Path) -> np.ndarray | tuple[str, str]:
    """Every face box of the photo, or (status, detail) where it has none to give."""
    try:
        return find_boxes(path, *_worker)
    except ImageError as error:
        return error.status, error.detail


def _main_face(path: Path) -> PreparedFace | tuple[str, str]:
    """The photo's main face as `prepare` frames it, or (status, detail)."""
    try:
        return prepare_face(path, *_worker)
    except ImageError as error:
        return error.status, error.detail


def in_workers(function: Callable[[Path], Any], paths: list[Path], prepare: PrepareConfig,
               detector: LandmarkDetector, label: str) -> list:
    """`[function(path) for path in paths]` in `prepare.workers` worker processes, with a progress bar.

    The detection may fall back to dlib's CNN, which must never run in this process: workers forked
    from a process that ran it hang in their first CNN call (infra/pool.py), and this process forks
    again for the next folder, the metrics or the test that runs next.
    """
    results: list = [None] * len(paths)
    found = imap_unordered(function, paths, prepare.workers or os.cpu_count() or 1, initializer=_start_worker,
                           initargs=(prepare, detector), describe=str)
    with closing(found), tqdm(total=len(paths), desc=label, unit="photo", disable=None) as bar:
        for position, result in found:
            results[position] = result
            bar.update()
    return results


def _anonymiser(params: Params, layout: Layout, options: PhotoOptions, labels: list[str]) -> Anonymiser:
    """The method's anonymiser as the anonymise stage builds it; every face of the run is its own identity."""
    entry = params.method(options.method)
    context = RunContext(method=options.method, dataset=DATASET, identities=tuple(labels),
                         checkpoint=layout.checkpoint(options.method), released=layout.released(options.method),
                         root=layout.path(entry.root) if entry.root else None,
                         batch_size=params.anonymise.batch_size, device=options.device)
    return create(entry.anonymiser_name(options.method), params.anonymiser_settings(options.method), context)


@dataclass(frozen=True)
class _PhotoRun:
    """What anonymising one photo takes, once its faces are found."""

    in_dir: Path
    out_dir: Path
    prepare: PrepareConfig
    detector: LandmarkDetector
    anonymiser: Anonymiser
    options: PhotoOptions
    conditions: list[PreparedFace]  # empty: the method ignores condition faces

    def anonymise(self, row: PhotoRow, boxes: np.ndarray, first_face: int) -> None:
        """Anonymise, paste back and write the photo of `row` (faces `first_face`... of the run); fills in the row."""
        try:
            photo = decode(self.in_dir / row.path, None, self.prepare.max_pixels).pixels.copy()
        except ImageError as error:  # changed since its faces were found
            row.status, row.reason = error.status, error.detail
            return
        faces, problems = frame_faces(photo, boxes, self.prepare, self.detector)
        if problems:  # a photo is written only with every face found anonymised
            row.failed = len(problems)
            row.status, row.reason = "failed", (f"{len(problems)} face(s) could not be framed, so the photo was not "
                                                "written: " + "; ".join(problems))
            return
        batch = self._batch(row.path, faces, first_face)
        anonymised = check_output(batch, self.anonymiser.anonymise(batch), self.options.method)
        for face, crop in zip(faces, anonymised, strict=True):
            paste_back(photo, crop, face.mask, face.transform, self.options.feather)
        _write_photo(self.out_dir / row.path, photo, self.options.jpeg_quality)
        row.anonymised = len(faces)

    def _batch(self, relpath: str, faces: list[FramedFace], first_face: int) -> FaceBatch:
        """The photo's faces, each its own identity, with conditions cycled in the run's face order."""
        sources, landmarks = np.stack([face.crop for face in faces]), np.stack([face.landmarks for face in faces])
        conditions, condition_landmarks = sources, landmarks  # ignored by the methods that take no condition
        if self.conditions:
            drawn = [self.conditions[(first_face + face.index) % len(self.conditions)] for face in faces]
            conditions = np.stack([face.crop for face in drawn])
            condition_landmarks = np.stack([face.landmarks for face in drawn])
        return FaceBatch(pair_ids=[face.index for face in faces], source=sources,
                         source_mask=np.stack([face.mask for face in faces]), source_landmarks=landmarks,
                         condition=conditions, condition_landmarks=condition_landmarks,
                         source_identity=[face_label(relpath, face.index) for face in faces])


def _write_photo(target: Path, photo: np.ndarray, jpeg_quality: int) -> None:
    """Write atomically in the format the file name says (the input's own)."""
    image_format = Image.registered_extensions()[target.suffix.lower()]
    quality = {"quality": jpeg_quality} if image_format in ("JPEG", "WEBP") else {}
    with atomic_path(target) as tmp:
        Image.fromarray(photo).save(tmp, format=image_format, **quality)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    pipelines.started()
    parser = argparse.ArgumentParser(prog="python -m pipelines.anonymise_photos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("in_dir", type=Path, metavar="IN_DIR", help="the photos (never written to)")
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="the anonymised photos and faces.csv")
    parser.add_argument("--method", required=True, help="a key of params.yaml `methods`, e.g. blur, pixelate")
    parser.add_argument("--params", type=Path, default=Layout().params_file,
                        help="params.yaml (default: ./params.yaml); models/ is looked up beside it")
    parser.add_argument("--overwrite", action="store_true", help="replace outputs that exist")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="the anonymiser's device (default: CUDA if any)")
    edge = parser.add_mutually_exclusive_group()
    edge.add_argument("--feather", type=float, default=FEATHER,
                      help=f"blend width inside the face mask's edge, in crop pixels (default {FEATHER:g})")
    edge.add_argument("--hard-edge", action="store_true", help="paste the mask as it is (--feather 0)")
    parser.add_argument("--conditions", type=Path, help="AnonyGAN: a folder of photos whose faces are the conditions")
    parser.add_argument("--jpeg-quality", type=int, default=95, choices=range(1, 101), metavar="1-100",
                        help="quality of JPEG and WebP outputs (default 95)")
    args = parser.parse_args(argv)
    if args.feather < 0:
        parser.error("--feather must be >= 0")
    options = PhotoOptions(args.method, 0.0 if args.hard_edge else args.feather, args.overwrite, args.device,
                           args.conditions, args.jpeg_quality)

    def call() -> pd.DataFrame:
        return anonymise_folder(args.in_dir, args.out_dir, config.load(args.params), Layout(args.params.parent),
                                options)

    return stage.guarded("anonymise_photos", call)


if __name__ == "__main__":
    main()
