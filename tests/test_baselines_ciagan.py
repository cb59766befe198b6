"""CIAGAN: network shapes, the 128 frame and back, training steps, targets, checkpoints, the stage."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from baselines.ciagan.anonymiser import Ciagan
from baselines.ciagan.config import CiaganInferenceConfig, CiaganModelConfig, CiaganTrainConfig
from baselines.ciagan.frame import landmark_image, network_inputs, random_boxes, to_crop, to_network
from baselines.ciagan.model import Discriminator, Generator, Siamese, load_checkpoint
from baselines.ciagan.training import CiaganTrainer, FaceSet, pair_batches, training_faces
from baselines.interface import RunContext, create
from facedata.prepared import PreparedDataset
from infra.errors import MissingInputError, ParamsError
from infra.records import TRAIN_PAIRS, pair_table
from infra.settings import load as load_settings
from pipelines import config
from pipelines import train_ciagan as train_stage
from pipelines.layout import Layout
from runtime import NonFiniteLossError
from tests.helpers import interrupted_at, make_batch, params, params_mapping

pytestmark = pytest.mark.usefixtures("one_thread")
#: Small enough for a CPU test, same code as the paper-scale networks (depth follows image_size).
TINY = {"image_size": 32, "generator_width": 8, "identity_width": 16, "discriminator_width": 8,
        "siamese_width": 8, "embedding_dim": 16}


@pytest.fixture(scope="module")
def faces(prepared_celeba):
    """Eight first photos and eight second photos of the prepared CelebA mini, with identity indices."""
    prepared = PreparedDataset(prepared_celeba)
    ok = prepared.ok
    identities = sorted(ok["identity"].unique())
    keys = list(ok["key"])
    firsts, seconds = keys[0:120:15], keys[7:127:15]
    batch = make_batch(np.stack([prepared.crop(k) for k in firsts]), np.stack([prepared.mask(k) for k in firsts]),
                       [prepared.identity(k) for k in firsts])
    batch.source_landmarks[:] = np.stack([prepared.landmarks(k) for k in firsts])
    planes = torch.cat([network_inputs(np.stack([prepared.crop(k) for k in ks]),
                                       np.stack([prepared.mask(k) for k in ks]),
                                       np.stack([prepared.landmarks(k) for k in ks])) for ks in (firsts, seconds)])
    labels = torch.tensor([identities.index(prepared.identity(k)) for k in firsts + seconds])
    return batch, planes, labels, identities


def test_default_networks_have_the_authors_shapes():
    config = CiaganModelConfig()
    assert config.depth == 5 and config.identities == 1200
    generator = Generator(config)
    images = torch.rand(2, 6, 128, 128)
    one_hot = torch.eye(1200)[[3, 7]]
    with torch.no_grad():
        assert generator(images, one_hot).shape == (2, 3, 128, 128)
        assert Discriminator(config)(images).shape == (2, 1)
        assert Siamese(config)(images[:, :3]).shape == (2, 1200)
    assert generator.identity_map_channels * 16 == 512  # the MLP's 512 outputs become a 32 x 4 x 4 map


@pytest.mark.parametrize("size", [4, 48, 100])
def test_image_size_must_be_a_power_of_two(size):
    with pytest.raises(ParamsError, match="ciagan.model.image_size must be a power of two >= 8"):
        load_settings(CiaganModelConfig, {"image_size": size}, "ciagan.model")


def test_landmark_drawing_is_three_polylines():
    points = np.zeros((68, 2), np.float32)
    points[0:17] = np.stack([np.linspace(20, 160, 17), np.full(17, 150)], 1)  # jaw: a horizontal line
    points[27:31] = np.stack([np.full(4, 90), np.linspace(80, 110, 4)], 1)  # nose: vertical
    square = [(70, 170), (90, 170), (110, 170), (110, 185), (110, 200), (90, 200), (70, 200), (70, 185)]
    points[60:68] = square
    points[31:60] = (5, 5)  # landmarks outside the 29-point set must not be drawn
    drawing = landmark_image(points, (220, 180))
    blue = (drawing == (0, 0, 255)).all(2)
    assert ((drawing == 255).all(2) | blue).all()
    assert blue[150, 20:161].all() and blue[80:111, 90].all()
    assert blue[170:201, 70].all()  # the closing segment 67 -> 60
    assert not blue[5, 5] and not blue[150, 161:].any()  # jaw not closed, eyes/brows not drawn


@pytest.mark.realdata
def test_frame_round_trip_keeps_the_background_exactly(faces):
    batch, planes, _, _ = faces
    face, drawing, mask = to_network(planes[:8], 128, 1.125)
    assert face.shape == drawing.shape == (8, 3, 128, 128) and mask.shape == (8, 1, 128, 128)
    assert 0.05 < mask.mean() < 0.6 and ((drawing[:, 0] < 0.9) & (drawing[:, 2] > 0.9)).any()
    back = to_crop(face, planes[:8], 1.125)
    masks = batch.source_mask
    assert np.array_equal(back[~masks], batch.source[~masks])
    # Down to 128 and up again blurs the face a little, nothing more.
    assert np.abs(back[masks].astype(int) - batch.source[masks]).mean() < 6


def test_training_boxes_span_the_configured_share():
    boxes = random_boxes(1000, (0.5, 0.75), torch.Generator().manual_seed(0))
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert width.min() >= 0.5 and width.max() <= 0.75 and height.min() >= 0.5 and height.max() <= 0.75
    assert (boxes[:, 0] < 0.5).all() and (boxes[:, 2] > 0.5).all()


def test_pair_batches_mix_random_and_same_identity_pairs_and_depend_on_seed_and_epoch():
    labels = [i // 10 for i in range(50)]
    batches = pair_batches(labels, 8, 20, seed=3, epoch=0)
    for indices in batches:
        firsts, seconds = np.array(labels)[indices[:8]], np.array(labels)[indices[8:]]
        assert (firsts == seconds).sum() >= 4
    assert batches == pair_batches(labels, 8, 20, seed=3, epoch=0)
    assert batches != pair_batches(labels, 8, 20, seed=3, epoch=1)


@pytest.mark.realdata
def test_training_steps_lower_the_losses_on_real_faces(faces):
    _, planes, labels, identities = faces
    trainer = CiaganTrainer(CiaganModelConfig(identities=len(identities), **TINY), CiaganTrainConfig(batch_size=8))
    pairs = trainer.pairs(planes, labels)
    steps = 5
    siamese = [trainer.siamese_step(pairs) for _ in range(steps)]
    critic = [trainer.critic_step(pairs, pairs) for _ in range(steps)]
    generator = [sum(trainer.generator_step(pairs)) for _ in range(steps)]
    for name, losses in (("siamese", siamese), ("critic", critic), ("generator", generator)):
        assert losses[-1] < losses[0], f"{name} loss did not fall: {losses}"


def test_target_is_the_next_identity_in_the_order():
    anonymiser = Ciagan(Generator(CiaganModelConfig(identities=3, **TINY)), ["x", "y", "z", "w"], device="cpu")
    assert anonymiser.targets(["x", "y", "z", "w", "x"]).tolist() == [1, 2, 0, 1, 1]
    with pytest.raises(KeyError, match="not in the CIAGAN identity order: q"):
        anonymiser.targets(["x", "q"])


@pytest.mark.realdata
def test_different_target_identities_give_different_faces(faces):
    batch, _, _, identities = faces
    anonymiser = Ciagan(Generator(CiaganModelConfig(identities=len(identities), **TINY)), identities,
                        CiaganInferenceConfig(spectral_norm="frozen"), device="cpu")
    first = anonymiser.render(batch, np.zeros(len(batch), int))
    second = anonymiser.render(batch, np.ones(len(batch), int))
    masks = batch.source_mask
    for out in (first, second):
        assert out.shape == batch.source.shape and out.dtype == np.uint8
        assert np.array_equal(out[~masks], batch.source[~masks])
    difference = np.abs(first.astype(int) - second.astype(int))
    assert difference[masks].mean() > 1
    assert all(face_difference[mask].max() > 10 for face_difference, mask in zip(difference, masks, strict=True))
    assert np.array_equal(anonymiser.render(batch, np.zeros(len(batch), int)), first)


@pytest.mark.realdata
def test_checkpoint_loads_through_the_registry(faces, tmp_path):
    batch, _, _, identities = faces
    checkpoint = tmp_path / "ciagan" / "checkpoint.pt"
    trainer = CiaganTrainer(CiaganModelConfig(identities=len(identities), **TINY), CiaganTrainConfig(batch_size=8),
                            checkpoint=checkpoint, identities=identities)
    trainer.save()
    order = tuple(dict.fromkeys(batch.source_identity))
    context = RunContext(method="ciagan", dataset="celeba", identities=order, checkpoint=checkpoint, device="cpu")
    anonymiser = create("ciagan", CiaganInferenceConfig(), context)
    direct = Ciagan(trainer.generator, order, device="cpu")
    assert np.array_equal(anonymiser.anonymise(batch), direct.anonymise(batch))
    with pytest.raises(ValueError, match="identity order"):
        create("ciagan", CiaganInferenceConfig(), RunContext(method="ciagan", dataset="celeba", checkpoint=checkpoint))
    with pytest.raises(MissingInputError, match="train-ciagan"):
        create("ciagan", CiaganInferenceConfig(), RunContext(method="ciagan", dataset="celeba", identities=order,
                                                             checkpoint=tmp_path / "none.pt"))


def tiny_mapping(**train) -> dict:
    """params.yaml with the small profile's CIAGAN and the given training settings."""
    mapping = params_mapping("small")
    mapping["ciagan"]["train"].update(train)
    return mapping


def test_params_are_validated():
    for key, value, message in (("colour", 1, "ciagan.train.colour is not a setting"),
                                ("batch_size", 2.5, "ciagan.train.batch_size must be an integer"),
                                ("batch_size", 3, "ciagan.train.batch_size must be even"),
                                ("augment_crop", [0.8, 0.5], "ciagan.train.augment_crop must be .low, high.")):
        with pytest.raises(ParamsError, match=message):
            config.from_mapping(tiny_mapping(**{key: value}))
    settings = params().ciagan
    # params.yaml holds the authors' settings; only the loader's process count is a machine choice.
    assert settings.model == CiaganModelConfig() and replace(settings.train, workers=0) == CiaganTrainConfig(workers=0)


@pytest.fixture(scope="module")
def training_layout(prepared_celeba, tmp_path_factory) -> Layout:
    """A pipeline layout whose training pairs name 3 identities (90 photos) of the aligned mini."""
    layout = Layout(tmp_path_factory.mktemp("ciagan-stage"))
    ok = PreparedDataset(prepared_celeba).ok
    rows = ok[ok["identity"].isin(ok["identity"].unique()[:3])]
    TRAIN_PAIRS.write(layout.train_pairs, pair_table(TRAIN_PAIRS, ok, rows["key"], same_image=[True] * len(rows)))
    layout.prepared("celeba").parent.mkdir(parents=True)
    layout.prepared("celeba").symlink_to(prepared_celeba)
    return layout


@pytest.mark.realdata
def test_stage_trains_from_params(training_layout, monkeypatch):
    monkeypatch.chdir(training_layout.root)  # DVCLive looks for a DVC repository from the working directory
    checkpoint = train_stage.run(config.from_mapping(tiny_mapping(epochs=2, sample_every=2)), training_layout)
    state = load_checkpoint(checkpoint)
    manifest = TRAIN_PAIRS.read(training_layout.train_pairs)
    assert state["epoch"] == 2
    assert state["data"]["identities"] == list(dict.fromkeys(manifest["source_identity"]))
    small = config.from_mapping(tiny_mapping()).ciagan.model
    assert state["model_config"] == {**vars(small), "identities": 3} and small.image_size == 32
    live = training_layout.live("ciagan")
    # 90 photos / (4 pairs x 6 batches per iteration) = 3 iterations per epoch; losses logged per epoch.
    logged = pd.read_csv(live / "plots" / "metrics" / "train" / "generator_gan.tsv", sep="\t")
    assert list(logged["step"]) == [1, 2]
    # Samples after epoch 2 (sample_every): one image per identity, two rows.
    samples = sorted((live / "plots" / "images" / "samples").iterdir())
    assert [p.name for p in samples] == ["epoch-0002.png"]
    with Image.open(samples[0]) as grid:
        assert grid.size == (3 * 180, 2 * 220)
    anonymiser = Ciagan.from_checkpoint(checkpoint, state["data"]["identities"], device="cpu")
    assert anonymiser.generator.config == replace(small, identities=3)


def ciagan_trainer(layout: Layout, checkpoint, epochs: int = 2) -> CiaganTrainer:
    pairs = TRAIN_PAIRS.read(layout.train_pairs)
    identities, keys, labels = training_faces(pairs, PreparedDataset(layout.prepared("celeba")))
    training = CiaganTrainConfig(epochs=epochs, batch_size=4, checkpoint_every=1, workers=0)
    return CiaganTrainer(CiaganModelConfig(identities=len(identities), **TINY), training,
                         FaceSet(layout.prepared("celeba"), keys, labels), checkpoint, identities=identities)


@pytest.mark.realdata
@pytest.mark.slow
def test_interrupted_and_resumed_training_equals_the_uninterrupted_one(training_layout, tmp_path, monkeypatch):
    uninterrupted = ciagan_trainer(training_layout, tmp_path / "a.pt")
    uninterrupted.fit()
    original = CiaganTrainer.train_epoch
    monkeypatch.setattr(CiaganTrainer, "train_epoch", interrupted_at(CiaganTrainer, 1))
    with pytest.raises(KeyboardInterrupt):
        ciagan_trainer(training_layout, tmp_path / "b.pt").fit()
    assert load_checkpoint(tmp_path / "b.pt")["epoch"] == 1
    monkeypatch.setattr(CiaganTrainer, "train_epoch", original)
    ciagan_trainer(training_layout, tmp_path / "b.pt").fit()
    a, b = load_checkpoint(tmp_path / "a.pt"), load_checkpoint(tmp_path / "b.pt")
    assert a["epoch"] == b["epoch"] == 2
    for name, state in a["modules"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, b["modules"][name][key]), f"{name}.{key}"


@pytest.mark.realdata
def test_a_non_finite_loss_stops_training_naming_it(training_layout, tmp_path):
    trainer = ciagan_trainer(training_layout, tmp_path / "checkpoint.pt")
    with torch.no_grad():
        trainer.siamese.head[-1].weight.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"siamese = nan at epoch 1, step 1.*set ciagan.train.precision: fp32"):
        trainer.fit()
    assert not (tmp_path / "checkpoint.pt").exists()


@pytest.mark.realdata
def test_resume_continue_applies_a_new_learning_rate_and_other_settings_keep_the_checkpoint_aside(training_layout,
                                                                                                   tmp_path):
    checkpoint = tmp_path / "checkpoint.pt"
    first = ciagan_trainer(training_layout, checkpoint)
    first.epoch = 1
    first.save()
    lower = replace(first.training, learning_rate=5e-5, resume="continue")
    trainer = CiaganTrainer(first.config, lower, first.faces, checkpoint, identities=first.identities)
    assert trainer.resume() and trainer.epoch == 1
    assert {group["lr"] for optimiser in trainer.optimisers.values() for group in optimiser.param_groups} == {5e-5}
    assert trainer.continued == [{"epoch": 1, "changes": {"learning_rate": [1e-4, 5e-5]}}]
    with pytest.raises(ParamsError, match="ciagan.train.resume: continue may change only learning_rate, precision"):
        CiaganTrainer(first.config, replace(lower, batch_size=8), first.faces, checkpoint,
                      identities=first.identities).resume()
    fresh = CiaganTrainer(first.config, replace(lower, resume="same_settings"), first.faces, checkpoint,
                          identities=first.identities)
    assert not fresh.resume() and (tmp_path / "checkpoint.epoch-0001.pt").is_file() and not checkpoint.exists()
