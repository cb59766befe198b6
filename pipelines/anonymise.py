"""Stage `anonymise@<method>`: one method's anonymiser over the test pairs of every dataset.

For each dataset it writes lossless crops `outputs/<dataset>/<method>/<pair_id>.png` with a
`manifest.csv` (pair_id, source, condition, status), or, with `anonymise.image_format: jpeg75`,
`<pair_id>.jpg` files as the AnonyGAN authors saved theirs. On LFW with `evaluate.lfw_frame: photo`
the images are the whole photos at 256x256 (stage photo-frame): methods that work in any frame
anonymise the photo itself, the others (CIAGAN, a folder of crops) their crop, pasted back into
it (facedata.pasteback). When `evaluate.metrics` has a parrot
metric, the parrot attacker's gallery in `gallery/` (pipelines.gallery). Pairs whose source photo was not prepared
are listed with their status and get no image. A method whose weights could not be obtained
(the authors' released files, offline) gets no images: every pair is "not available", and
summary.json says why. The folder is replaced as a whole only when every batch succeeded: the old
one moves aside, the new one in, then the old one is removed (`infra.atomic.swap_in`), so a kill
leaves one of them complete and the next run finishes the swap.

    python -m pipelines.anonymise <method>

The method is a key of params.yaml `methods`; its entry names the registered anonymiser
(`anonymiser: folder` evaluates images another program wrote; see the README) and the params
section of its settings.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from baselines.interface import Anonymiser, RunContext, check_output, create, identity_order, load_batch
from facedata.datasets import DATASETS
from facedata.images import encoded, image_file
from facedata.pasteback import paste_back
from facedata.prepared import PreparedDataset
from infra.atomic import finish_swap, swap_in, write_bytes
from infra.errors import NotAvailableError
from infra.records import ANONYMISED, TEST_PAIRS, AnonymiseSummary
from pipelines import gallery, stage
from pipelines.config import Params
from pipelines.layout import Layout, require


@dataclass(frozen=True)
class Faces:
    """What a method anonymises on one dataset, and how its images are stored."""

    framed: PreparedDataset  # the faces in the stage's frame: the images written are of this frame
    crops: PreparedDataset  # the canonical crops, for methods that take nothing else (the same in the crop frame)
    image_format: str = "png"  # anonymise.image_format

    @classmethod
    def of(cls, params: Params, layout: Layout, dataset: str) -> Faces:
        crops = PreparedDataset(layout.prepared(dataset))
        frame = params.frame(dataset)
        framed = crops if frame == "crop" else PreparedDataset(require(layout.framed(dataset, frame), "photo-frame"))
        return cls(framed, crops, params.anonymise.image_format)

    def anonymised(self, anonymiser: Anonymiser, rows: pd.DataFrame, method: str) -> list[np.ndarray]:
        """The framed images of `rows` anonymised: the method's own output, or its crops pasted back into the frame."""
        pasted = self.framed is not self.crops and not anonymiser.any_frame
        faces = self.crops if pasted else self.framed
        batch = load_batch(rows, faces, faces)
        if "label" in rows:  # the parrot's gallery: the identity the method derives the condition from
            batch = dataclasses.replace(batch, source_identity=list(rows["label"]))
        images = check_output(batch, anonymiser.anonymise(batch), method)
        if not pasted:
            return list(images)
        photos = []
        for key, crop, mask in zip(rows["source"], images, batch.source_mask, strict=True):
            photo = self.framed.crop(key).copy()
            paste_back(photo, crop, mask, self.framed.transform(key))
            photos.append(photo)
        return photos


def run_dataset(params: Params, layout: Layout, method: str, dataset: str) -> AnonymiseSummary:
    started = time.perf_counter()
    entry = params.method(method)
    manifest = TEST_PAIRS[dataset].read(require(layout.test_pairs(dataset), "pairs"))
    faces = Faces.of(params, layout, dataset)
    context = RunContext(method=method, dataset=dataset, identities=identity_order(manifest),
                         checkpoint=layout.checkpoint(method), released=layout.released(method),
                         root=layout.path(entry.root) if entry.root else None,
                         batch_size=params.anonymise.batch_size)
    unavailable = None
    try:
        anonymiser = create(entry.anonymiser_name(method), params.anonymiser_settings(method), context)
    except NotAvailableError as error:
        anonymiser, unavailable = None, str(error)
    out = layout.outputs(dataset, method)
    staging = _clear_staging(layout, dataset, method)
    staging.mkdir(parents=True)
    if anonymiser is None:
        status = np.full(len(manifest), "not available")
    else:
        status = anonymise_pairs(anonymiser, manifest, faces, staging, params.anonymise.batch_size, method, dataset)
        if gallery.wanted(params):  # the parrot attacker's gallery (pipelines.gallery)
            gallery.build(params, method, context, manifest, faces, staging / gallery.GALLERY)
    summary = AnonymiseSummary(dataset, method, pairs=len(manifest), anonymised=int((status == "ok").sum()),
                               skipped=int((status != "ok").sum()), seconds=round(time.perf_counter() - started, 2),
                               not_available=unavailable, frame=params.frame(dataset),
                               image_format=faces.image_format)
    ANONYMISED.write(staging / "manifest.csv", manifest[["pair_id", "source", "condition"]].assign(status=status))
    summary.write(staging / "summary.json")
    swap_in(staging, out, layout.remove)
    if unavailable is not None:
        print(f"{dataset}/{method}: not available ({unavailable}); its rows say so")
    else:
        print(f"{dataset}/{method}: {summary.anonymised} of {summary.pairs} pairs anonymised, "
              f"{summary.skipped} skipped (source not prepared) in {summary.seconds} s")
    return summary


def anonymise_pairs(anonymiser: Anonymiser, manifest: pd.DataFrame, faces: Faces, staging: Path,
                    batch_size: int, method: str, dataset: str) -> np.ndarray:
    """Write each pair's image (`images.image_file`) into `staging` where its photos are ready; each pair's status."""
    ready = faces.framed.ok.index
    runnable = manifest["source"].isin(ready) & manifest["condition"].isin(ready)
    todo = manifest[runnable]
    for start in tqdm(range(0, len(todo), batch_size), desc=f"{dataset}/{method}", unit="batch", disable=None):
        rows = todo.iloc[start : start + batch_size]
        for pair_id, image in zip(rows["pair_id"], faces.anonymised(anonymiser, rows, method), strict=True):
            write_bytes(staging / image_file(pair_id, faces.image_format), encoded(image, faces.image_format))
    # Why a pair was skipped: its source's status in the frame (e.g. not_square), else the pairs stage's (missing, ...)
    framed_status = manifest["source"].map(faces.framed.index["status"])
    reason = framed_status.where(framed_status.notna() & (framed_status != "ok"), manifest["source_status"])
    return np.where(runnable, "ok", "skipped: " + reason.astype(str))


def _clear_staging(layout: Layout, dataset: str, method: str) -> Path:
    """Clean up what a killed run left (its staging folder, a half-done swap); returns the staging folder's path.

    It sits beside the output folder, on the same file system, so the finished folder replaces the
    old one by renames (`swap_in`). .dvcignore hides `.*.partial` from DVC: never an input of
    evaluate or report.
    """
    out = layout.outputs(dataset, method)
    finish_swap(out, layout.remove)
    staging = out.parent / f".{method}.partial"
    layout.remove(staging)
    return staging


def run(params: Params, layout: Layout, method: str) -> dict[str, AnonymiseSummary]:
    for dataset in DATASETS:
        _clear_staging(layout, dataset, method)
    return {dataset: run_dataset(params, layout, method, dataset) for dataset in DATASETS}


def main(argv: list[str] | None = None, layout: Layout = Layout()) -> None:
    stage.main(run, "anonymise", __doc__, item="method", argv=argv, layout=layout,
               lock_folder=lambda layout, _: layout.outputs_root)


if __name__ == "__main__":
    main()
