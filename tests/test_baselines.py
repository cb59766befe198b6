"""The anonymiser interface: FaceBatch, registry, batch loading, the folder and AnonyGAN adapters."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import anonygan.anonymiser
from anonygan.config import InferenceConfig
from baselines import catalogue
from baselines.folder import FolderAnonymiser
from baselines.interface import (
    Anonymiser,
    FaceBatch,
    RunContext,
    check_output,
    create,
    identity_order,
    load_batch,
)
from baselines.settings import FolderConfig
from facedata.prepared import PreparedDataset
from infra.errors import DataError, MissingInputError, ParamsError
from infra.records import TEST_PAIRS, pair_table
from tests.helpers import REPO, make_batch


def small_batch(n: int = 2) -> FaceBatch:
    images = np.random.default_rng(0).integers(0, 256, (n, 22, 18, 3), dtype=np.uint8)
    masks = np.zeros((n, 22, 18), bool)
    masks[:, 5:15, 4:14] = True
    return make_batch(images, masks)


def test_every_paper_method_is_in_the_catalogue():
    assert set(catalogue.available()) == {"original", "blur", "pixelate", "ciagan", "folder", "anonygan",
                                          "anonygan-released", "ciagan-released"}
    with pytest.raises(KeyError, match="unknown anonymiser 'deepprivacy'.*blur"):
        create("deepprivacy")


class Invert(Anonymiser):
    def anonymise(self, batch: FaceBatch) -> np.ndarray:
        return np.where(batch.source_mask[..., None], 255 - batch.source, batch.source)


def test_a_new_method_is_one_small_class_and_one_catalogue_entry(monkeypatch):
    monkeypatch.setitem(catalogue.ANONYMISERS, "test-invert", catalogue.Entry(f"{__name__}:Invert", __file__))
    batch = small_batch()
    out = check_output(batch, create("test-invert").anonymise(batch), "test-invert")
    assert np.array_equal(out[batch.source_mask], 255 - batch.source[batch.source_mask])


def test_catalogue_entries_name_their_code_and_settings():
    """Each entry's class loads from its `code`, and a released method loads the release its class reads."""
    for name, entry in catalogue.ANONYMISERS.items():
        cls = entry.load()
        assert issubclass(cls, Anonymiser), name
        module_file = Path(sys.modules[cls.__module__].__file__).relative_to(REPO)
        assert module_file.as_posix().startswith(entry.code), (name, module_file, entry.code)
        assert getattr(cls, "released_model", None) == entry.released_model, name


def test_face_batch_rejects_inconsistent_arrays():
    batch = small_batch()
    with pytest.raises(ValueError, match="source_mask must be"):
        FaceBatch(batch.pair_ids, batch.source, batch.source_mask[:, :-1], batch.source_landmarks,
                  batch.condition, batch.condition_landmarks, batch.source_identity)
    with pytest.raises(ValueError, match="source must be uint8"):
        FaceBatch(batch.pair_ids, batch.source.astype(np.float32), batch.source_mask, batch.source_landmarks,
                  batch.condition, batch.condition_landmarks, batch.source_identity)
    with pytest.raises(ValueError, match="source_identity has 1 entries for 2 faces"):
        FaceBatch(batch.pair_ids, batch.source, batch.source_mask, batch.source_landmarks,
                  batch.condition, batch.condition_landmarks, ["a"])


def test_check_output_names_the_method():
    batch = small_batch()
    with pytest.raises(DataError, match="'broken' returned .*float64"):
        check_output(batch, batch.source.astype(float), "broken")


def test_identity_order_is_first_appearance():
    manifest = pd.DataFrame({"source_identity": [31, 31, 7, 12, 7]})
    assert identity_order(manifest) == ("31", "7", "12")


@pytest.mark.realdata
def test_load_batch_from_manifest_rows(prepared_celeba):
    prepared = PreparedDataset(prepared_celeba)
    keys = list(prepared.ok["key"])
    rows = pd.DataFrame({"pair_id": [5, 9], "source": keys[:2], "condition": keys[40:42]})
    batch = load_batch(rows, prepared, prepared)
    assert batch.pair_ids == [5, 9] and batch.source.shape == (2, 220, 180, 3)
    assert np.array_equal(batch.source[1], prepared.crop(keys[1]))
    assert np.array_equal(batch.condition[0], prepared.crop(keys[40]))
    assert np.array_equal(batch.source_mask[0], prepared.mask(keys[0]))
    assert np.array_equal(batch.condition_landmarks[1], prepared.landmarks(keys[41]))
    assert batch.source_identity == [prepared.identity(keys[0]), prepared.identity(keys[1])]
    with pytest.raises(KeyError, match="nope.jpg"):
        load_batch(pd.DataFrame({"pair_id": [0], "source": ["nope.jpg"], "condition": keys[:1]}), prepared, prepared)


def write_folder(directory, batch: FaceBatch, images: np.ndarray) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for pair_id, image in zip(batch.pair_ids, images, strict=True):
        Image.fromarray(image).save(directory / f"{pair_id}.png")


def test_folder_reads_third_party_images(tmp_path):
    batch = small_batch(3)
    written = 255 - batch.source
    write_folder(tmp_path / "celeba", batch, written)
    anonymiser = create("folder", FolderConfig(root=str(tmp_path)), RunContext(method="folder", dataset="celeba"))
    assert np.array_equal(anonymiser.anonymise(batch), written)
    # A method entry's own root wins over anonymisers.folder.root.
    own = create("folder", FolderConfig(root="elsewhere"), RunContext(method="mine", dataset="celeba", root=tmp_path))
    assert np.array_equal(own.anonymise(batch), written)


def test_folder_fails_clearly(tmp_path):
    batch = small_batch(3)
    write_folder(tmp_path, batch, batch.source)
    (tmp_path / "1.png").unlink()
    with pytest.raises(MissingInputError, match=r"1 of 3 images missing: 1\.png"):
        FolderAnonymiser(tmp_path).anonymise(batch)
    Image.fromarray(batch.source[1][:, :-2]).save(tmp_path / "1.png")
    with pytest.raises(DataError, match=r"1\.png is 16x22 \(WxH\); the crops are 18x22"):
        FolderAnonymiser(tmp_path).anonymise(batch)
    (tmp_path / "1.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"1\.png: not a readable image"):
        FolderAnonymiser(tmp_path).anonymise(batch)
    with pytest.raises(MissingInputError, match="is not a directory"):
        FolderAnonymiser(tmp_path / "absent")
    with pytest.raises(ParamsError, match="methods.folder.root or anonymisers.folder.root"):
        create("folder", FolderConfig(), RunContext(method="folder", dataset="lfw"))


class RecordingInference:
    """Stands in for anonygan.inference.AnonyGANInference: records what the adapter passes."""

    calls: list = []

    @classmethod
    def from_checkpoint(cls, path, config, device=None, batch_size=32):
        cls.calls.append(("load", path, config, device, batch_size))
        return cls()

    def anonymise(self, source, source_landmarks, source_mask, condition, condition_landmarks):
        self.calls.append(("anonymise", source, source_landmarks, source_mask, condition, condition_landmarks))
        return condition.copy()


def test_one_anonymiser_loads_any_variants_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(anonygan.anonymiser, "AnonyGANInference", RecordingInference)
    RecordingInference.calls = []
    batch = small_batch()
    for method in ("anonygan-68", "anonygan-new"):
        checkpoint = tmp_path / method / "checkpoint.pt"
        context = RunContext(method=method, dataset="celeba", checkpoint=checkpoint, device="cpu", batch_size=8)
        with pytest.raises(MissingInputError, match=f"train@{method}"):
            create("anonygan", InferenceConfig(), context)
        checkpoint.parent.mkdir()
        checkpoint.write_bytes(b"weights")
        settings = InferenceConfig(output="composited")
        anonymiser = create("anonygan", settings, context)
        assert RecordingInference.calls[-1] == ("load", checkpoint, settings, "cpu", 8)
        assert np.array_equal(anonymiser.anonymise(batch), batch.condition)
        _, *arrays = RecordingInference.calls[-1]
        expected = (batch.source, batch.source_landmarks, batch.source_mask, batch.condition, batch.condition_landmarks)
        assert all(a is b for a, b in zip(arrays, expected, strict=True))
    with pytest.raises(TypeError, match="takes InferenceConfig settings"):
        create("anonygan", FolderConfig(), context)


@pytest.mark.realdata
def test_anonygan_adapter_runs_a_real_checkpoint(prepared_celeba, tmp_path):
    """Through the AnonyGAN helper's inference API with a tiny untrained model: shapes and compositing."""
    from anonygan.config import ModelConfig, TrainConfig
    from anonygan.training import Trainer

    model = ModelConfig(landmarks=29, landmark_attention=False, base_channels=4, graph_blocks=1,
                        discriminator_channels=4)
    checkpoint = tmp_path / "anonygan-plain-29" / "checkpoint.pt"
    Trainer(model, TrainConfig(), data=None, checkpoint=checkpoint, device=torch.device("cpu")).save()
    prepared = PreparedDataset(prepared_celeba)
    keys = list(prepared.ok["key"])
    batch = load_batch(pair_table(TEST_PAIRS["celeba"], prepared.index, keys[:2], keys[60:62]), prepared, prepared)
    anonymiser = create("anonygan", InferenceConfig(output="composited"),
                        RunContext(method="anonygan-plain-29", dataset="celeba", checkpoint=checkpoint, device="cpu"))
    out = check_output(batch, anonymiser.anonymise(batch), "anonygan-plain-29")
    assert np.array_equal(out[~batch.source_mask], batch.source[~batch.source_mask])
    assert not np.array_equal(out[batch.source_mask], batch.source[batch.source_mask])
