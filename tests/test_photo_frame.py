"""The authors' LFW frame: whole photos at 256x256 (facedata.photo_frame), and the anonymise stage working in it."""

from __future__ import annotations

import hashlib
import io
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from anonygan.anonymiser import AnonyGAN
from anonygan.inference import AnonyGANInference
from anonygan.model import build
from baselines.classic import Blur, blur_inside
from baselines.interface import Anonymiser, FaceBatch
from facedata import datasets, photo_frame
from facedata.framing import face_mask
from facedata.images import encoded, image_file
from facedata.pasteback import blend_weight, paste_back
from facedata.prepared import PreparedDataset, crop_relpath
from infra.errors import DataError
from pipelines.anonymise import Faces
from runtime.torchvision_compat import ensure_torchvision
from tests.helpers import tiny_configs

pytestmark = pytest.mark.realdata
FIRST = 12  # prepared LFW photos each test frames


def first_rows(prepared_lfw) -> PreparedDataset:
    """The prepared LFW set cut to its first photos (the frame is built per photo: a few say as much as all)."""
    prepared = PreparedDataset(prepared_lfw)
    prepared.index = prepared.index.iloc[:FIRST]
    return prepared


@pytest.fixture(scope="module")
def framed(prepared_lfw, lfw_root, tmp_path_factory) -> tuple[PreparedDataset, PreparedDataset]:
    """(the crops, the same photos in the photo frame)."""
    out = tmp_path_factory.mktemp("lfw-photo")
    crops = first_rows(prepared_lfw)
    summary = photo_frame.build(crops, lfw_root / datasets.image_folder("lfw", "deepfunneled"), out, workers=2)
    assert summary == {"photos": FIRST, "framed": len(crops.ok), "not_square": 0, "size": 256}
    return crops, PreparedDataset(out)


def test_each_photo_is_the_authors_resize_with_its_landmarks_mask_and_transform_in_that_frame(framed, lfw_root):
    ensure_torchvision()
    from torchvision import transforms

    crops, photos = framed
    authors_resize = transforms.Resize((256, 256))  # src/data/dataloader.py l.301-307, on the PIL image
    assert list(photos.ok.index) == list(crops.ok.index) and len(photos.ok) >= FIRST - 1
    for key in photos.ok.index:
        with Image.open(lfw_root / datasets.image_folder("lfw", "deepfunneled") / key) as photo:
            expected = np.asarray(authors_resize(photo.convert("RGB")))
        image = photos.crop(key)
        assert np.array_equal(image, expected), key
        row, crop_row = photos.index.loc[key], crops.index.loc[key]
        assert row["crop_sha1"] == hashlib.sha1((photos.root / crop_relpath(key)).read_bytes()).hexdigest()
        assert (row["width"], row["height"], row["identity"]) == (256, 256, crop_row["identity"])
        landmarks = photos.landmarks(key)
        photo_landmarks = np.asarray(crop_row["landmarks_image"]).reshape(68, 2)
        np.testing.assert_allclose((landmarks + 0.5) * 250 / 256 - 0.5, photo_landmarks, atol=1e-3)
        # The frame's transform takes its landmarks to the crop's: paste-back lands the crop on its own face.
        np.testing.assert_allclose(photos.transform(key).to_crop(landmarks), crops.landmarks(key), atol=1e-3)
        assert np.array_equal(photos.mask(key), face_mask(landmarks, (256, 256))) and photos.mask(key).sum() > 2000


def test_the_prepared_crop_pasted_back_into_the_frame_lands_on_its_own_face(framed):
    """The transform's direction and scale on real pixels: the pasted crop differs by resampling error only."""
    crops, photos = framed
    for key in photos.ok.index:
        image = photos.crop(key)
        pasted = image.copy()
        paste_back(pasted, crops.crop(key), crops.mask(key), photos.transform(key))
        inside = photos.mask(key)
        error = np.abs(pasted.astype(int) - image).max(axis=2)[inside]
        assert error.mean() <= 3 and np.percentile(error, 99) <= 16, (key, error.mean(), np.percentile(error, 99))


def test_a_photo_changed_since_prepare_stops_the_build_with_its_name(prepared_lfw, lfw_root, tmp_path):
    crops = first_rows(prepared_lfw)
    source = lfw_root / datasets.image_folder("lfw", "deepfunneled")
    for key in crops.index.index:
        (tmp_path / "photos" / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / key, tmp_path / "photos" / key)
    changed = crops.ok.index[3]
    (tmp_path / "photos" / changed).write_bytes((source / changed).read_bytes() + b"\0")
    (tmp_path / "out").mkdir()
    with pytest.raises(DataError, match=f"{changed} changed since prepare@lfw read it"):
        photo_frame.build(crops, tmp_path / "photos", tmp_path / "out", workers=1)


def test_a_photo_that_is_not_square_gets_a_status_and_no_frame(prepared_lfw, lfw_root, tmp_path):
    crops = first_rows(prepared_lfw)
    odd = crops.ok.index[0]
    crops.index.loc[odd, "width"] = 240  # as prepare would record a 240x250 photo
    summary = photo_frame.build(crops, lfw_root / datasets.image_folder("lfw", "deepfunneled"), tmp_path, workers=1)
    photos = PreparedDataset(tmp_path)
    assert summary["not_square"] == 1 and photos.index.loc[odd, "status"] == "not_square"
    assert odd not in photos and not (tmp_path / crop_relpath(odd)).exists()
    assert len(photos.ok) == len(crops.ok) - 1


class SolidCrop(Anonymiser):
    """A method that only takes canonical crops (any_frame False), painting each one magenta."""

    def anonymise(self, batch: FaceBatch) -> np.ndarray:
        assert batch.source.shape[1:3] == (220, 180)  # it is given crops, not the frame's photos
        return np.broadcast_to(np.array([255, 0, 255], np.uint8), batch.source.shape).copy()


def rows_of(photos: PreparedDataset) -> pd.DataFrame:
    keys = list(photos.ok.index[:4])
    return pd.DataFrame({"pair_id": range(len(keys)), "source": keys, "condition": keys[::-1]})


def test_a_crop_method_is_pasted_back_into_the_photo_and_others_work_on_the_photo(framed):
    crops, photos = framed
    faces, rows = Faces(photos, crops), rows_of(photos)
    for key, image in zip(rows["source"], faces.anonymised(SolidCrop(), rows, "solid"), strict=True):
        photo = photos.crop(key)
        assert image.shape == photo.shape == (256, 256, 3)
        # The crop's mask in the photo's frame: magenta well inside it, the photo untouched away from it.
        weight = blend_weight(crops.mask(key))
        inner = photos.transform(key).to_image(np.argwhere(weight == 1)[:, ::-1].astype(np.float32))
        centre = np.rint(np.median(inner, axis=0)).astype(int)
        assert tuple(image[centre[1], centre[0]]) == (255, 0, 255), key
        assert np.array_equal(image[~_dilated(photos.mask(key), 4)], photo[~_dilated(photos.mask(key), 4)]), key
    blurred = faces.anonymised(Blur(), rows, "blur")  # any frame: the photo itself, inside its mask
    sources = np.stack([photos.crop(key) for key in rows["source"]])
    masks = np.stack([photos.mask(key) for key in rows["source"]])
    assert np.array_equal(np.stack(blurred), blur_inside(sources, masks, Blur().kernel_size, Blur().sigma))


def _dilated(mask: np.ndarray, pixels: int) -> np.ndarray:
    import cv2

    return cv2.dilate(mask.astype(np.uint8), np.ones((2 * pixels + 1, 2 * pixels + 1), np.uint8)) > 0


def test_the_crop_frame_is_unchanged_by_the_frame_machinery(framed):
    crops, _ = framed
    faces, rows = Faces(crops, crops), rows_of(crops)
    for key, image in zip(rows["source"], faces.anonymised(SolidCrop(), rows, "solid"), strict=True):
        assert image.shape == crops.crop(key).shape and (image == (255, 0, 255)).all()


def test_jpeg75_files_are_what_the_authors_pil_call_writes(framed):
    """The authors' `Image.fromarray(...).save(<name>.jpg)`, no options: PIL's JPEG defaults, byte for byte."""
    _, photos = framed
    image = photos.crop(photos.ok.index[0])
    authors = io.BytesIO()
    Image.fromarray(image).save(authors, format="JPEG")
    assert encoded(image, "jpeg75") == authors.getvalue() and image_file(7, "jpeg75") == "7.jpg"
    assert np.abs(read_rgb_bytes(encoded(image, "jpeg75")).astype(int) - image).mean() > 0.5  # lossy
    assert np.array_equal(read_rgb_bytes(encoded(image, "png")), image)


def read_rgb_bytes(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))



def test_anonygan_runs_on_the_whole_photo_with_landmark_maps_in_its_frame(framed):
    """As the authors' LFW test: the fully convolutional generator on 256x256 photos, maps drawn at 256x256."""
    torch.manual_seed(0)
    generator, _, _ = build(tiny_configs()[0])
    seen = []
    generator.register_forward_hook(lambda module, args, output: seen.append(args))
    crops, photos = framed
    rows = rows_of(photos)
    images = Faces(photos, crops).anonymised(AnonyGAN(AnonyGANInference(generator, device=torch.device("cpu"))), rows,
                                             "anonygan")
    assert np.stack(images).shape == (len(rows), 256, 256, 3)
    (condition, context, condition_maps, source_maps), = seen
    assert condition.shape[2:] == context.shape[2:] == source_maps.shape[2:] == (256, 256)
    for maps, keys in ((source_maps, rows["source"]), (condition_maps, rows["condition"])):
        for face, key in zip(maps, keys, strict=True):
            expected = np.rint(photos.landmarks(key)).astype(int)  # one-hot at each landmark's pixel in the frame
            hot = np.stack(np.unravel_index(face.flatten(1).argmax(1).numpy(), (256, 256)), 1)[:, ::-1]
            assert np.array_equal(hot, expected), key
