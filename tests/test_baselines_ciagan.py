"""CIAGAN: network shapes, the 128 frame and back, training steps, targets, checkpoints, the stage."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from baselines import RunContext, create
from baselines.ciagan import Ciagan, CiaganConfig, CiaganTrainer, Discriminator, Generator, Siamese, TrainingConfig
from baselines.ciagan.frame import landmark_image, network_inputs, random_boxes, to_crop, to_network
from baselines.ciagan.training import PairBatches
from facedata.prepared import PreparedDataset
from pipelines.params import ParamsError, load
from pipelines.train_ciagan import configs_from_params, train
from tests.conftest import REPO
from tests.test_baselines import make_batch

#: Small enough for a CPU test, same code as the paper-scale networks (depth follows image_size).
TINY = {"image_size": 32, "generator_width": 8, "identity_width": 16, "discriminator_width": 8,
        "siamese_width": 8, "embedding_dim": 16}


@pytest.fixture(autouse=True)
def one_thread():
    """The test machine's cores are shared; one thread is faster than two contending ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
    config = CiaganConfig()
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
    with pytest.raises(ValueError, match="power of two"):
        CiaganConfig(image_size=size)


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


def test_pair_batches_mix_random_and_same_identity_pairs():
    labels = [i // 10 for i in range(50)]
    batches = iter(PairBatches(labels, 8, seed=3))
    for _ in range(20):
        indices = next(batches)
        firsts, seconds = np.array(labels)[indices[:8]], np.array(labels)[indices[8:]]
        assert (firsts == seconds).sum() >= 4
    assert next(iter(PairBatches(labels, 8, seed=3))) == next(iter(PairBatches(labels, 8, seed=3)))


@pytest.mark.realdata
def test_training_steps_lower_the_losses_on_real_faces(faces):
    _, planes, labels, identities = faces
    trainer = CiaganTrainer(CiaganConfig(identities=len(identities), **TINY), TrainingConfig(batch_size=8))
    pairs = trainer.pairs(planes, labels)
    steps = 5
    siamese = [trainer.siamese_step(pairs) for _ in range(steps)]
    critic = [trainer.critic_step(pairs, pairs) for _ in range(steps)]
    generator = [sum(trainer.generator_step(pairs)) for _ in range(steps)]
    for name, losses in (("siamese", siamese), ("critic", critic), ("generator", generator)):
        assert losses[-1] < losses[0], f"{name} loss did not fall: {losses}"


def test_target_is_the_next_identity_in_the_order():
    anonymiser = Ciagan(Generator(CiaganConfig(identities=3, **TINY)), ["x", "y", "z", "w"], device="cpu")
    assert anonymiser.targets(["x", "y", "z", "w", "x"]).tolist() == [1, 2, 0, 1, 1]
    with pytest.raises(KeyError, match="not in the CIAGAN identity order: q"):
        anonymiser.targets(["x", "q"])


@pytest.mark.realdata
def test_different_target_identities_give_different_faces(faces):
    batch, _, _, identities = faces
    anonymiser = Ciagan(Generator(CiaganConfig(identities=len(identities), **TINY)), identities, device="cpu")
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
    trainer = CiaganTrainer(CiaganConfig(identities=len(identities), **TINY), TrainingConfig(batch_size=8))
    checkpoint = tmp_path / "ciagan" / "checkpoint.pt"
    checkpoint.parent.mkdir()
    torch.save(trainer.checkpoint(identities, iteration=0), checkpoint)
    order = tuple(dict.fromkeys(batch.source_identity))
    anonymiser = create("ciagan", RunContext(method="ciagan", dataset="celeba", identities=order, models=tmp_path,
                                             device="cpu"))
    direct = Ciagan(trainer.generator, order, device="cpu")
    assert np.array_equal(anonymiser.anonymise(batch), direct.anonymise(batch))
    with pytest.raises(ValueError, match="identity order"):
        create("ciagan", RunContext(method="ciagan", dataset="celeba", models=tmp_path))
    with pytest.raises(FileNotFoundError, match="train@ciagan"):
        create("ciagan", RunContext(method="ciagan", dataset="celeba", identities=order, models=tmp_path / "none"))


def test_authors_weights_load_by_position(tmp_path):
    source, target = Generator(CiaganConfig()), Generator(CiaganConfig())
    # Their names differ from ours; order, shapes and kinds match.
    authors = {f"module{i}.{key.rsplit('.', 1)[-1]}": value
               for i, (key, value) in enumerate(source.state_dict().items())}
    target.load_authors_weights(authors)
    images, one_hot = torch.rand(1, 6, 128, 128), torch.eye(1200)[[5]]
    source.eval(), target.eval()
    with torch.no_grad():
        assert torch.equal(source(images, one_hot), target(images, one_hot))
    with pytest.raises(ValueError, match="identities=1200"):
        Generator(CiaganConfig(identities=1200, image_size=64)).load_authors_weights(authors)
    released = tmp_path / "modelG.pth"
    torch.save(authors, released)
    anonymiser = Ciagan.from_authors_weights(released, ["a"], device="cpu")
    with torch.no_grad():
        assert torch.equal(anonymiser.generator(images, one_hot), source(images, one_hot))
    first = next(iter(authors))
    with pytest.raises(ValueError, match=f"authors' {first}"):
        target.load_authors_weights({**authors, first: torch.zeros(3)})


class RecordingLog:
    def __init__(self):
        self.losses_at, self.images = [], {}

    def losses(self, iteration, losses):
        self.losses_at.append((iteration, dict(losses)))

    def samples(self, name, grid):
        self.images[name] = grid


def authors_generator_keys() -> list[str]:
    """State-dict names of the authors' 128-px `Generator` (arch_unet_flex.py), in their order."""
    conv = [f"conv2d.{kind}" for kind in ("bias", "weight_orig", "weight_u", "weight_v")]
    norm = ["weight", "bias"]
    keys = []
    for level in range(5):
        keys += [f"conv{level}.{side}.{c}" for side in ("conv_r1", "conv_r2", "conv_l") for c in conv]
        keys += [f"in{level}_e.{n}" for n in norm]
    keys += [f"embed.0.{c}" for c in conv] + [f"embed.1.{n}" for n in norm]
    for block in range(1, 5):
        keys += [f"res{block}.{layer}" for a, b in (("conv1", "in1"), ("conv2", "in2"))
                 for layer in [f"{a}.{c}" for c in conv] + [f"{b}.{n}" for n in norm]]
    for level in (4, 3, 2, 1, 0):
        keys += [f"deconv{level}.{layer}" for a, b in (("norm_r1", "conv_r1"), ("norm_r2", "conv_r2"))
                 for layer in [f"{a}.{n}" for n in norm] + [f"{b}.{c}" for c in conv]]
        keys += [f"deconv{level}.conv_l.{c}" for c in conv] + [f"in{level}_d.{n}" for n in norm]
    keys += ["conv_end.0.weight", "conv_end.0.bias"]
    keys += [f"encode_one_hot.{index}.{kind}" for index in range(0, 14, 2) for kind in ("weight", "bias")]
    for conv_index, norm_index in ((0, 2), (3, 5), (6, 8)):
        keys += [f"encode_noise.{conv_index}.{c}" for c in conv] + [f"encode_noise.{norm_index}.{n}" for n in norm]
    return keys


def test_the_authors_key_layout_maps_onto_ours():
    generator = Generator(CiaganConfig())
    ours = generator.state_dict()
    theirs = authors_generator_keys()
    assert len(theirs) == len(ours)
    generator.load_authors_weights(dict(zip(theirs, ours.values(), strict=True)))  # kinds checked in order


def tiny_params(**overrides) -> dict:
    params = load(REPO / "params.yaml")
    params["ciagan"].update({**TINY, "epochs": 2, "batch_size": 4, "workers": 0, "log_every": 1, **overrides})
    return params


def test_params_are_validated():
    with pytest.raises(ParamsError, match="unknown setting.*colour"):
        configs_from_params(tiny_params(colour=1), 5)
    with pytest.raises(ParamsError, match="ciagan.batch_size must be an integer"):
        configs_from_params(tiny_params(batch_size=2.5), 5)
    with pytest.raises(ParamsError, match="even number"):
        configs_from_params(tiny_params(batch_size=3), 5)
    config, training = configs_from_params(load(REPO / "params.yaml"), 1200)
    # params.yaml holds the authors' settings; only the loader's process count is a machine choice.
    assert config == CiaganConfig() and replace(training, workers=0) == TrainingConfig(workers=0)


@pytest.mark.realdata
def test_stage_trains_from_params(prepared_celeba, tmp_path):
    prepared = PreparedDataset(prepared_celeba)
    ok = prepared.ok
    train_identities = ok["identity"].unique()[:3]
    rows = ok[ok["identity"].isin(train_identities)]
    manifest = pd.DataFrame({"pair_id": range(len(rows)), "source": rows["key"].to_numpy(),
                             "condition": rows["key"].to_numpy(), "source_identity": rows["identity"].to_numpy(),
                             "condition_identity": rows["identity"].to_numpy(), "same_image": True})
    manifest.to_csv(tmp_path / "celeba_train.csv", index=False)
    checkpoint = tmp_path / "models" / "ciagan" / "checkpoint.pt"
    log = RecordingLog()
    train(tiny_params(sample_every=2), tmp_path / "celeba_train.csv", prepared_celeba, checkpoint, log)
    state = torch.load(checkpoint, weights_only=True)
    # 90 photos / (4 pairs x 6 batches per iteration) = 3 iterations per epoch, 2 epochs.
    assert state["iteration"] == 6 and [iteration for iteration, _ in log.losses_at] == [1, 2, 3, 4, 5, 6]
    assert set(log.losses_at[0][1]) >= {"siamese", "discriminator", "generator_gan", "generator_identity"}
    assert state["identities"] == list(dict.fromkeys(manifest["source_identity"].astype(str)))  # manifest order
    assert state["config"]["identities"] == 3 and state["config"]["image_size"] == 32
    # Samples after epoch 2 (sample_every) and at the end, which coincide: one image per identity, two rows.
    assert list(log.images) == ["epoch-0002.png"] and log.images["epoch-0002.png"].size == (3 * 180, 2 * 220)
    anonymiser = Ciagan.from_checkpoint(checkpoint, state["identities"], device="cpu")
    assert anonymiser.generator.config == CiaganConfig(identities=3, **TINY)
