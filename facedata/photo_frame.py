"""The authors' LFW frame: each whole photo resized to 256x256, with its landmarks and face mask in that frame.

    build(PreparedDataset("data/prepared/lfw"), photos_dir, Path("data/prepared/lfw-photo"), workers=8)

The AnonyGAN authors fed LFW to every method, and measured it, as the whole 250x250 photo squashed
to 256x256 (`Resize((256, 256))` on the PIL image, `src/data/dataloader.py` l.301-307: bilinear),
not as a face crop. This module writes that frame in the layout `facedata.prepared` reads, so the
anonymise and evaluate stages read it exactly as they read the canonical crops:

    crops/<key>.png   the photo at 256x256 (the frame's image; "crop" keeps the reader's names)
    masks/<key>.png   the face mask drawn from the landmarks in this frame (`framing.face_mask`)
    index.parquet     the prepared rows with `landmarks` in this frame, `width`/`height` 256 and
                      `transform` mapping this frame to the canonical crop (to paste a crop back)

Landmarks come from prepare (photo coordinates), scaled with the image: nothing is detected
again. Rows prepare could not use keep their status; a photo that changed since prepare (its
SHA-1 differs) stops the build with the key named. The frame needs square photos (every LFW photo
is 250x250): one transform scale maps it to the crop.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from facedata.framing import CropTransform, face_mask
from facedata.images import READ_MAX_PIXELS, ImageError, decode, png_bytes
from facedata.prepare_engine import photo_path
from facedata.prepared import PreparedDataset, crop_relpath, mask_relpath
from infra.atomic import write_bytes, write_table
from infra.errors import DataError
from infra.pool import imap_unordered

#: Side of the authors' LFW frame (`Resize((256, 256))`).
SIZE = 256
#: Prepared-index columns whose values this frame replaces; the journal digest of a prepare row no longer applies.
DROPPED = ("row_sha256",)


@dataclass(frozen=True)
class Job:
    key: str
    photo: Path
    sha1: str  # prepare's digest of the photo's bytes
    size: tuple[int, int]  # (width, height) prepare found
    landmarks_image: np.ndarray  # (68, 2) pixel-centre photo coordinates
    transform: CropTransform  # photo -> canonical crop


def frame_photo(rgb: np.ndarray, landmarks_image: np.ndarray, transform: CropTransform, size: int = SIZE
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, CropTransform]:
    """(image, mask, landmarks, frame -> crop transform) of a square photo in the size x size frame."""
    height, width = rgb.shape[:2]
    if height != width:
        raise ValueError(f"the photo frame needs a square photo, got {width}x{height}")
    factor = size / width
    image = np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.BILINEAR))
    landmarks = ((landmarks_image + 0.5) * factor - 0.5).astype(np.float32)  # pixel centres scale with the image
    return image, face_mask(landmarks, (size, size)), landmarks, transform.rescaled(factor)


def frame_job(job: Job) -> dict:
    """The job's photo in the frame: its row's new values, and the image and mask as PNG bytes."""
    data = job.photo.read_bytes()
    if hashlib.sha1(data).hexdigest() != job.sha1:
        raise DataError(f"{job.photo} changed since prepare@lfw read it: run `dvc repro prepare@lfw`")
    try:
        decoded = decode(job.photo, None, READ_MAX_PIXELS)
    except ImageError as error:
        raise DataError(f"{job.photo}: {error}") from None
    if decoded.pixels.shape[1::-1] != job.size:
        raise DataError(f"{job.photo} is {decoded.pixels.shape[1]}x{decoded.pixels.shape[0]}, prepare recorded "
                        f"{job.size[0]}x{job.size[1]}: run `dvc repro prepare@lfw`")
    image, mask, landmarks, transform = frame_photo(decoded.pixels, job.landmarks_image, job.transform)
    return {"image": png_bytes(image), "mask": png_bytes(mask.astype(np.uint8) * 255),
            "landmarks": landmarks.ravel().tolist(), "transform": transform.as_list()}


def build(prepared: PreparedDataset, photos: Path, out: Path, workers: int) -> dict:
    """Write the frame of every prepared photo into `out` (a new folder); returns counts."""
    root = photos.resolve()
    index = prepared.index.drop(columns=[c for c in DROPPED if c in prepared.index.columns]).reset_index(drop=True)
    ok = index[index["status"] == "ok"]
    unsquare = ok["width"] != ok["height"]
    index.loc[unsquare[unsquare].index, ["status", "detail"]] = [
        "not_square", "the 256x256 photo frame squashes square photos only (LFW's are 250x250)"]
    jobs = [Job(row.key, photo_path(root, row.key), row.sha1, (int(row.width), int(row.height)),
                np.asarray(row.landmarks_image, np.float32).reshape(68, 2), CropTransform.from_list(row.transform))
            for row in index[index["status"] == "ok"].itertuples()]
    position = {key: i for i, key in enumerate(index["key"])}
    landmarks, transforms = list(index["landmarks"]), list(index["transform"])
    crop_sha1, mask_sha1 = list(index["crop_sha1"]), list(index["mask_sha1"])
    results = imap_unordered(frame_job, jobs, workers, describe=lambda job: job.key)
    for done, framed in tqdm(results, total=len(jobs), desc="lfw: photo frame", unit="photo", disable=None):
        key = jobs[done].key
        at = position[key]
        write_bytes(out / crop_relpath(key), framed["image"])
        write_bytes(out / mask_relpath(key), framed["mask"])
        crop_sha1[at], mask_sha1[at] = (hashlib.sha1(framed[k]).hexdigest() for k in ("image", "mask"))
        landmarks[at], transforms[at] = framed["landmarks"], framed["transform"]
    framed_index = index.assign(landmarks=landmarks, transform=transforms, crop_sha1=crop_sha1, mask_sha1=mask_sha1)
    framed_index.loc[framed_index["status"] == "ok", ["width", "height"]] = SIZE
    write_table(out / "index.parquet", framed_index)
    return {"photos": len(index), "framed": len(jobs), "not_square": int(unsquare.sum()), "size": SIZE}

