"""AnonyGAN: network sizes and shapes per variant, the bipartite crossing, losses, gradients;
training on real faces (hybrid batches, overfitting, exact resume), checkpoints, inference, the stage."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import default_collate

from anonygan import losses
from anonygan.config import SIDE_MULTIPLE, SMALLEST_SIDE, InferenceConfig, ModelConfig, crop_size_problem
from anonygan.data import NetworkInputs, PairData, hybrid_batches, landmark_maps, resized_landmark_maps
from anonygan.inference import AnonyGANInference
from anonygan.model import AttentionDecoder, BipartiteGraphUnit, LandmarkAttention, build, composite, load_checkpoint
from anonygan.training import Trainer
from facedata.landmarks import CIAGAN_29
from facedata.prepared import PreparedDataset
from infra.errors import DataError
from infra.pool import WorkerDiedError
from infra.records import TRAIN_PAIRS
from pipelines import config
from pipelines import train as train_stage
from pipelines.layout import Layout
from runtime import NonFiniteLossError
from tests.helpers import SMALL, deadline, interrupted_at, pair_manifest, params, params_mapping, tiny_configs

VARIANTS = tuple(params().variants)


def random_inputs(config: ModelConfig, batch: int, size: tuple[int, int], seed: int = 0):
    """Images in [-1, 1] and one-hot landmark maps at random positions."""
    generator = torch.Generator().manual_seed(seed)
    height, width = size
    condition, source = (torch.rand(batch, 3, height, width, generator=generator) * 2 - 1 for _ in range(2))
    landmarks = torch.rand(2, batch, 68, 2, generator=generator) * torch.tensor([width - 1, height - 1])
    condition_maps, source_maps = (landmark_maps(points, config.landmark_indices, height, width)
                                   for points in landmarks)
    mask = torch.zeros(batch, 1, height, width)
    mask[..., height // 4: 3 * height // 4, width // 4: 3 * width // 4] = 1
    return condition, source, mask, condition_maps, source_maps


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_full_generator_has_the_papers_28_4_million_parameters():
    generator, d_app, d_lm = build(ModelConfig())
    assert round(parameter_count(generator) / 1e6, 1) == 28.4
    # D_lm differs from D_app only in its first conv: 68 landmark channels instead of 3 image ones.
    assert parameter_count(d_lm) - parameter_count(d_app) == (68 - 3) * 64 * 4 * 4


def test_variants_are_the_papers_ablation_rows_and_override_model_and_train_settings():
    variants = params()
    rows = {name: (model.landmarks, model.landmark_attention, train.context_matching)
            for name in variants.variants for model, train in [variants.variant(name)]}
    assert rows == {"anonygan-plain-68": (68, False, False), "anonygan-plain-29": (29, False, False),
                    "anonygan-la-68": (68, True, False), "anonygan-68": (68, True, True)}
    model, train = variants.variant("anonygan-plain-29")
    assert (model.base_channels, model.graph_blocks, train.batch_size, train.epochs) == (64, 6, 32, 700)
    # A fifth variant is one entry, and may change any model or train setting.
    mapping = params_mapping()
    mapping["variants"]["anonygan-68-j5"] = {"attention_kernel": 5, "wfm_samples": "all"}
    model, train = config.from_mapping(mapping).variant("anonygan-68-j5")
    assert (model.attention_kernel, train.wfm_samples, model.landmarks, train.context_matching) == (5, "all", 68, True)


@pytest.mark.slow
def test_full_size_generator_maps_220x180_inputs_to_a_220x180_image():
    config = ModelConfig()
    generator, d_app, d_lm = build(config)
    condition, source, mask, condition_maps, source_maps = random_inputs(config, 1, (220, 180))
    # Train mode: with fresh BatchNorm statistics the unnormalised graph projection (a sum over
    # all 55x45 positions, as in the authors' GloRe unit) grows through the 6 blocks in eval mode.
    with torch.no_grad():
        image = generator(condition, source * (1 - mask), condition_maps, source_maps)
        features = d_app(image, condition)
    assert image.shape == (1, 3, 220, 180) and image.abs().max() <= 1
    # PatchGAN: 5 feature maps, then 11x9 patch logits at 220x180 (the authors' label size).
    assert [f.shape[1] for f in features] == [64, 128, 256, 512, 512, 1]
    assert features[-1].shape == (1, 1, 11, 9)


def runs_at(size: tuple[int, int]) -> bool:
    """Whether tiny networks map (height, width) inputs to an image of that size and at least one patch logit."""
    model, _ = tiny_configs()
    generator, d_app, _ = build(model)
    condition, source, mask, condition_maps, source_maps = random_inputs(model, 1, size)
    try:
        image = generator(condition, source * (1 - mask), condition_maps, source_maps)
        return image.shape[2:] == size and d_app(image, condition)[-1].numel() > 0
    except RuntimeError:  # a size mismatch between encoder and decoder, or a kernel larger than its input
        return False


def test_the_crop_size_rule_is_what_the_networks_need():
    assert crop_size_problem(220, 180) is None and crop_size_problem(SMALLEST_SIDE, SMALLEST_SIDE) is None
    for size in [(SMALLEST_SIDE, SMALLEST_SIDE), (52, 64), (SMALLEST_SIDE, 100)]:
        assert runs_at(size), size
    for size in [(SMALLEST_SIDE - SIDE_MULTIPLE, SMALLEST_SIDE), (SMALLEST_SIDE, 181), (54, 64)]:
        assert crop_size_problem(*size) is not None and not runs_at(size), size


@pytest.mark.parametrize("method", VARIANTS)
def test_each_variant_in_the_tiny_configuration_outputs_images_and_patch_logits(method):
    model, _ = tiny_configs(method)
    generator, d_app, d_lm = build(model)
    condition, source, mask, condition_maps, source_maps = random_inputs(model, 2, SMALL)
    assert condition_maps.shape == (2, model.landmarks, *SMALL)
    image = generator(condition, source * (1 - mask), condition_maps, source_maps)
    assert image.shape == (2, 3, *SMALL)
    assert d_app(image, condition)[-1].shape == d_lm(image, source_maps)[-1].shape == (2, 1, 2, 1)
    has_attention = any(isinstance(m, LandmarkAttention) for m in generator.modules())
    assert has_attention == model.landmark_attention
    assert generator.shape_encoder[1].in_channels == 2 * model.landmarks
    assert len(generator.blocks) == 2 and generator.blocks[0].appearance_path[1].in_channels == 32


def test_landmark_maps_are_one_hot_at_the_rounded_pixel_and_skip_points_outside():
    landmarks = torch.zeros(1, 68, 2)
    landmarks[0, 0] = torch.tensor([3.4, 5.6])  # x, y -> pixel (row 6, column 3)
    landmarks[0, 1] = torch.tensor([-3.0, 2.0])  # outside the frame
    landmarks[0, 2:] = torch.tensor([7.0, 1.0])
    maps = landmark_maps(landmarks, range(68), 10, 8)
    assert maps.shape == (1, 68, 10, 8)
    assert maps[0, 0, 6, 3] == 1 and maps[0, 0].sum() == 1
    assert maps[0, 1].sum() == 0
    assert maps[0, 2:, 1, 7].eq(1).all() and maps.sum() == 67
    subset = landmark_maps(landmarks, CIAGAN_29, 10, 8)
    assert torch.equal(subset, maps[:, list(CIAGAN_29)])


def test_landmark_attention_weights_maps_per_channel_and_starts_near_one_half():
    attention = LandmarkAttention(3)
    maps = landmark_maps(torch.rand(2, 68, 2) * 50, range(68), 64, 52)
    weighted = attention(maps)
    weights = weighted.sum(dim=(2, 3)) / maps.sum(dim=(2, 3))  # each channel has one pixel set
    # One-hot GAP is ~1/(H*W), so sigmoid(conv(.)) stays within a hair of 0.5.
    assert torch.allclose(weights, torch.full_like(weights, 0.5), atol=1e-3)
    with torch.no_grad():  # the 1-D conv mixes neighbouring channels: kernel [0, 1, 0] sees only its own
        attention.conv.weight.copy_(torch.tensor([[[0.0, 1.0, 0.0]]]) * 1e4)
    pooled = maps.mean(dim=(2, 3))
    assert torch.allclose(attention(maps), maps * torch.sigmoid(1e4 * pooled)[:, :, None, None])


def real_landmarks(prepared: Path, count: int = 4) -> torch.Tensor:
    faces = PreparedDataset(prepared)
    return torch.from_numpy(np.stack([faces.landmarks(key) for key in faces.ok.sort_index()["key"][:count]]))


@pytest.mark.realdata
def test_landmark_attention_keeps_its_weights_in_fp32_under_bf16_autocast(prepared_celeba):
    landmarks = real_landmarks(prepared_celeba)
    maps = torch.cat([landmark_maps(landmarks, range(68), 220, 180),
                      landmark_maps(landmarks.flip(0), range(68), 220, 180)], dim=1)  # Lm_c, Lm_s: one-hot
    assert torch.equal(maps.sum(dim=(2, 3)), torch.ones(4, 136))  # every point inside the crop
    torch.manual_seed(0)
    attention = LandmarkAttention(3)

    def weights() -> torch.Tensor:  # each channel has one pixel set: its output there is its weight
        return attention(maps).sum(dim=(2, 3))

    exact = weights()
    assert exact.dtype == torch.float32 and (exact != 0.5).all() and (exact - 0.5).abs().max() < 1e-4
    with torch.autocast("cpu", dtype=torch.bfloat16):
        # The same computation without the fp32 island: sigmoid of ~1e-5 rounds to exactly 0.5 in bf16.
        rounded = torch.sigmoid(attention.conv(maps.mean(dim=(2, 3)).unsqueeze(1)))
        assert rounded.dtype == torch.bfloat16 and (rounded == 0.5).all()
        assert torch.equal(weights(), exact)


@pytest.mark.realdata
def test_training_maps_are_one_hot_at_218x178_resized_bilinearly_as_the_authors_loader(prepared_celeba):
    from runtime.torchvision_compat import ensure_torchvision

    ensure_torchvision()
    from torchvision.transforms import Resize

    landmarks = real_landmarks(prepared_celeba)
    ours = resized_landmark_maps(landmarks, range(68), 220, 180)
    # Their maps: one-hot on the 178x218 aligned photo, resized by torchvision (0.9: no antialiasing).
    on_their_photo = (landmarks + 0.5) * torch.tensor([178 / 180, 218 / 220]) - 0.5
    theirs = Resize((220, 180), antialias=False)(landmark_maps(on_their_photo, range(68), 218, 178))
    assert torch.allclose(ours, theirs, atol=1e-6)
    # Each point spreads over a few pixels, peaks below 1 and keeps its place.
    assert ours.amax(dim=(2, 3)).max() < 1 and ((ours > 0).sum(dim=(2, 3)) >= 4).all()
    assert torch.allclose(ours.sum(dim=(2, 3)), torch.ones(4, 68), atol=0.05)
    ys, xs = torch.meshgrid(torch.arange(220.0), torch.arange(180.0), indexing="ij")
    mass = ours.sum(dim=(2, 3))
    centre = torch.stack([(ours * xs).sum(dim=(2, 3)) / mass, (ours * ys).sum(dim=(2, 3)) / mass], dim=-1)
    assert (centre - landmarks).abs().max() < 0.75

    # Training inputs use them (train.landmark_maps: resized); the sample grid and inference exact one-hot.
    model, config = tiny_configs()
    trainer = Trainer(model, config, data=None, checkpoint=Path("unused.pt"))
    faces = PreparedDataset(prepared_celeba)
    keys = list(faces.ok.sort_index()["key"][:4])
    batch = {"source": torch.from_numpy(np.stack([faces.crop(k) for k in keys])),
             "mask": torch.from_numpy(np.stack([faces.mask(k) for k in keys])),
             "source_landmarks": landmarks, "condition": torch.from_numpy(np.stack([faces.crop(k) for k in keys])),
             "condition_landmarks": landmarks, "same_image": torch.ones(4, dtype=torch.bool)}
    assert torch.allclose(trainer.inputs(batch).source_maps, ours)
    assert torch.equal(trainer.inputs(batch, training=False).source_maps, landmark_maps(landmarks, range(68), 220, 180))


def test_attention_decoder_ends_in_the_authors_transposed_convolution_or_the_same_map_as_a_convolution():
    torch.manual_seed(0)
    authors, conv = AttentionDecoder(64), AttentionDecoder(64, "conv")
    assert ModelConfig().attention_output == "conv_transpose"
    assert isinstance(authors[2], torch.nn.ConvTranspose2d) and authors[2].weight.shape == (64, 1, 1, 1)
    assert isinstance(conv[2], torch.nn.Conv2d) and conv[2].weight.shape == (1, 64, 1, 1)
    # PyTorch's default init takes the fan-in from dim 1: 1 for the transposed layer, 64 for the convolution.
    assert 0.5 < authors[2].weight.abs().max() <= 1 and conv[2].weight.abs().max() <= 1 / 8
    conv.load_state_dict({**authors.state_dict(), "2.weight": authors[2].weight.transpose(0, 1)})
    code = torch.randn(2, 256, 6, 5)
    assert torch.allclose(authors(code), conv(code), atol=1e-6)


def test_bipartite_unit_projects_each_half_with_the_other_halfs_map():
    torch.manual_seed(0)
    unit = BipartiteGraphUnit(16).eval()
    with torch.no_grad():  # non-trivial running statistics, so the norm is not the identity
        unit.norm.running_mean.uniform_(-1, 1)
        unit.norm.running_var.uniform_(0.5, 2)
    shape = torch.randn(2, 32, 6, 5)
    a, b = shape[:, :16], shape[:, 16:]

    def by_hand(half, other, gcn):
        states = unit.to_states(half).flatten(2)  # (N, 16 states, 30 pixels)
        projection = unit.to_projection(other).flatten(2)  # (N, 8 nodes, 30 pixels): the other half's
        nodes = torch.einsum("nsp,nvp->nsv", states, projection)
        nodes = gcn.state_update(F.relu(gcn.node_mixing(nodes.transpose(1, 2)).transpose(1, 2) + nodes))
        pixels = torch.einsum("nsv,nvp->nsp", nodes, projection).reshape(2, 16, 6, 5)
        return half + unit.norm(unit.extend(pixels))

    with torch.no_grad():
        out = unit(shape)
        assert torch.allclose(out[:, :16], by_hand(a, b, unit.gcn_a), atol=1e-5)
        assert torch.allclose(out[:, 16:], by_hand(b, a, unit.gcn_b), atol=1e-5)
        # The crossing itself: changing half B moves half A's output (it supplies A's projection).
        moved = unit(torch.cat([a, b + torch.randn_like(b)], dim=1))
        assert not torch.allclose(moved[:, :16], out[:, :16], atol=1e-3)


@pytest.mark.parametrize(("blend", "attention", "expected"),
                         [("context", 0.0, "context"), ("condition", 1.0, "condition")])
def test_output_blend_follows_the_attention_mask(blend, attention, expected, monkeypatch):
    """context: G * A + I_sc * (1 - A) (authors' code); condition: I_c * A + G * (1 - A) (paper)."""
    model = ModelConfig(base_channels=4, graph_blocks=1, output_blend=blend)
    generator, _, _ = build(model)
    condition, source, mask, condition_maps, source_maps = random_inputs(model, 1, SMALL)
    inputs = {"condition": condition, "context": source * (1 - mask)}
    monkeypatch.setattr(generator.attention_decoder, "forward",
                        lambda code: torch.full((len(code), 1, *SMALL), attention))
    with torch.no_grad():
        image = generator(inputs["condition"], inputs["context"], condition_maps, source_maps)
    assert torch.equal(image, inputs[expected])


def test_reconstruction_region_image_sees_every_pixel_and_face_only_the_mask():
    source = torch.zeros(1, 3, 8, 8)
    generated = torch.zeros(1, 3, 8, 8)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4, :] = 1  # top half is face
    generated[..., 4:, :] = 1.0  # error only outside the face
    assert losses.reconstruction(generated, source, mask, "image").item() == pytest.approx(0.5)
    assert losses.reconstruction(generated, source, mask, "face").item() == 0.0
    generated[..., :4, :] = -1.0  # and now inside too
    assert losses.reconstruction(generated, source, mask, "face").item() == pytest.approx(0.5)
    assert torch.equal(composite(generated, source, mask)[..., 4:, :], source[..., 4:, :])
    with pytest.raises(ValueError, match="region"):
        losses.reconstruction(generated, source, mask, "mask")


def test_gan_and_feature_matching_losses():
    logits = torch.tensor([[2.0, -1.0]])
    assert losses.adversarial(logits, True).item() == pytest.approx(
        -(F.logsigmoid(logits)).mean().item())
    assert losses.discriminator(logits, logits).item() == pytest.approx(
        (losses.adversarial(logits, True) + losses.adversarial(logits, False)).item() / 2)
    real = [torch.zeros(2, 4, 3, 3), torch.zeros(2, 8, 2, 2)]
    fake = [torch.ones(2, 4, 3, 3, requires_grad=True), torch.full((2, 8, 2, 2), 3.0, requires_grad=True)]
    matched = losses.weak_feature_matching(fake, real)
    assert matched.item() == pytest.approx(1.0 + 3.0)  # per-layer means, summed
    assert losses.weak_feature_matching(fake, real, 0.8).item() == pytest.approx(0.8 * 4.0)  # the authors' weight
    matched.backward()
    assert fake[0].grad is not None


def test_context_matching_covers_every_sample_by_default_or_the_different_image_pairs(tmp_path):
    model, config = tiny_configs()
    condition, source, mask, condition_maps, source_maps = random_inputs(model, 4, SMALL)
    x = NetworkInputs(source=source, condition=condition, context=source * (1 - mask), mask=mask,
                      source_maps=source_maps, condition_maps=condition_maps,
                      same_image=torch.tensor([False, True, True, True]))
    trainer = Trainer(model, config, data=None, checkpoint=tmp_path / "checkpoint.pt")
    with torch.no_grad():
        generated = trainer.generator(x.condition, x.context, x.condition_maps, x.source_maps)
        fake, real = trainer.d_app(generated, x.condition)[:-1], trainer.d_app(x.source, x.condition)[:-1]

        def expected(rows):  # the authors' 0.8 per layer, each layer's mean L1 over the rows
            return 0.8 * sum(F.l1_loss(f[rows], r[rows]) for f, r in zip(fake, real, strict=True))

        assert config.wfm_samples == "all" and config.wfm_layer_weight == 0.8
        every = trainer.generator_losses(x, generated)["wfm"]
        assert torch.allclose(every, expected(slice(None)))
        trainer.config = replace(config, wfm_samples="different")
        assert torch.allclose(trainer.generator_losses(x, generated)["wfm"], expected(slice(0, 1)))


@pytest.mark.parametrize("method", VARIANTS)
def test_one_training_step_gives_every_parameter_of_all_three_networks_a_gradient(method, tmp_path):
    model, train = tiny_configs(method)
    trainer = Trainer(model, train, data=None, checkpoint=tmp_path / "checkpoint.pt")
    condition, source, mask, condition_maps, source_maps = random_inputs(model, 4, SMALL)
    same = torch.tensor([True, True, True, False])
    condition = torch.where(same[:, None, None, None], source, condition)
    condition_maps = torch.where(same[:, None, None, None], source_maps, condition_maps)
    x = NetworkInputs(source=source, condition=condition, context=source * (1 - mask), mask=mask,
                      source_maps=source_maps, condition_maps=condition_maps, same_image=same)
    step_losses = trainer.step([x])
    assert all(torch.isfinite(value) for value in step_losses.values())
    assert step_losses["g_reconstruction"] > 0
    assert (step_losses["g_wfm"] > 0) == train.context_matching
    for name in ("generator", "d_app", "d_lm"):
        for parameter_name, parameter in getattr(trainer, name).named_parameters():
            assert parameter.grad is not None, f"{name}.{parameter_name} got no gradient"
            assert parameter.grad.abs().sum() > 0, f"{name}.{parameter_name} has an all-zero gradient"


# -- training on real faces -------------------------------------------------------------



@pytest.fixture(scope="module")
def small_pairs(small_prepared) -> PairData:
    return PairData(PreparedDataset(small_prepared), pair_manifest(small_prepared))


def test_hybrid_batches_hold_the_same_image_share_in_every_batch_and_depend_on_seed_and_epoch():
    same_image = np.array([True] * 30 + [False] * 10)
    batches = hybrid_batches(same_image, batch_size=32, batches=5, seed=0, epoch=3)  # 75 % same
    assert len(batches) == 5
    for batch in batches:
        assert len(batch) == 32 and same_image[batch].sum() == 24
    assert batches == hybrid_batches(same_image, 32, 5, seed=0, epoch=3)
    assert batches != hybrid_batches(same_image, 32, 5, seed=0, epoch=4)
    half = np.array([True, False] * 4)
    assert all(half[b].sum() == 2 for b in hybrid_batches(half, 4, 3, seed=0, epoch=0))
    only_same = np.ones(8, dtype=bool)
    assert all(only_same[b].all() for b in hybrid_batches(only_same, 4, 2, seed=0, epoch=0))


def test_learning_rate_follows_the_authors_per_step_schedule_to_zero_in_the_last_epoch():
    """Their LambdaLR(1 - max(0, e + 2 - 500) / 201) stepped after every batch with the epoch number."""
    _, config = tiny_configs(**{"train.epochs": 700, "train.lr_decay_start_epoch": 500})
    assert config.lr_schedule == "authors"
    reference = torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD([torch.zeros(1)], lr=1.0),
                                                  lambda epoch: 1.0 - max(0, epoch + 1 + 1 - 500) / float(200 + 1))
    for epoch in range(700):
        for step in range(3):  # the learning rate each step runs at, then the authors' sch.step(current_epoch)
            assert config.lr_factor(epoch, step) == pytest.approx(reference.get_last_lr()[0], abs=1e-12)
            with pytest.warns(UserWarning):  # the epoch argument is deprecated, as it was in their PyTorch
                reference.step(epoch)
    assert config.lr_factor(498, 1) == 1.0 and config.lr_factor(499, 0) == 1.0
    assert config.lr_factor(499, 1) == pytest.approx(200 / 201)
    assert config.lr_factor(699, 0) == pytest.approx(1 / 201) and config.lr_factor(699, 1) == 0.0


def test_the_epochwise_schedule_is_one_epoch_later_and_constant_within_an_epoch():
    _, config = tiny_configs(**{"train.epochs": 700, "train.lr_decay_start_epoch": 500,
                                "train.lr_schedule": "epochwise"})
    factors = [config.lr_factor(epoch, 1) for epoch in range(700)]
    assert factors[:500] == [1.0] * 500 and [config.lr_factor(e, 0) for e in range(700)] == factors
    assert np.allclose(np.diff(factors[499:]), -1 / 201) and factors[-1] == pytest.approx(1 / 201)


@pytest.mark.realdata
def test_pair_data_names_faces_that_were_not_prepared(small_prepared):
    manifest = pair_manifest(small_prepared)
    manifest.loc[0, "condition"] = "999999.jpg"
    with pytest.raises(DataError, match=r"1 pair keys are not prepared.*999999\.jpg"):
        PairData(PreparedDataset(small_prepared), manifest)


@pytest.mark.realdata
@pytest.mark.slow
def test_tiny_configuration_overfits_eight_real_faces(small_pairs, tmp_path):
    """Reconstruction L1 of 8 same-image pairs halves within 200 steps (G + D_app + D_lm each)."""
    model, config = tiny_configs(**{"train.batch_size": 8, "train.samples_per_epoch": 8, "train.batches_per_step": 1})
    trainer = Trainer(model, config, small_pairs, tmp_path / "checkpoint.pt")
    same_rows = np.flatnonzero(small_pairs.same_image)
    assert len(same_rows) == 8
    x = trainer.inputs(default_collate([small_pairs[int(i)] for i in same_rows]))
    start, history = time.perf_counter(), []
    for _ in range(200):
        # Each step's loss is measured before its update: history[0] is the untrained L1.
        history.append(trainer.step([x])["g_reconstruction"].item())
        if history[-1] <= 0.5 * history[0]:
            break
    print(f"\nL1 {history[0]:.3f} -> {history[-1]:.3f} in {len(history)} steps, "
          f"{time.perf_counter() - start:.1f} s")
    assert history[-1] <= 0.5 * history[0], f"L1 only fell from {history[0]:.3f} to {min(history):.3f}"


def final_state(path: Path) -> dict:
    state = load_checkpoint(path)
    return {key: state[key] for key in ("epoch", "modules")}


def assert_same(a, b, where="checkpoint"):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"{where} differs"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.fixture(scope="module")
def trained(small_pairs, tmp_path_factory):
    """(model config, train config, checkpoint) of an uninterrupted 3-epoch tiny run, a checkpoint per epoch."""
    overrides = {"train.epochs": 3, "train.samples_per_epoch": 8, "train.checkpoint_every": 1,
                 "train.lr_decay_start_epoch": 1}
    model, config = tiny_configs(**overrides)
    checkpoint = tmp_path_factory.mktemp("uninterrupted") / "checkpoint.pt"
    Trainer(model, config, small_pairs, checkpoint).fit()
    return model, config, checkpoint


@pytest.mark.realdata
@pytest.mark.slow
def test_interrupted_and_resumed_run_equals_the_uninterrupted_one(trained, small_pairs, tmp_path,
                                                                  monkeypatch):
    model, config, uninterrupted = trained
    monkeypatch.chdir(tmp_path)  # DVCLive looks for a DVC repository from the working directory
    checkpoint, live = tmp_path / "model" / "checkpoint.pt", tmp_path / "dvclive"
    original = Trainer.train_epoch
    monkeypatch.setattr(Trainer, "train_epoch", interrupted_at(Trainer, 2))
    with pytest.raises(KeyboardInterrupt):
        Trainer(model, config, small_pairs, checkpoint, live_dir=live).fit()
    assert load_checkpoint(checkpoint)["epoch"] == 2
    monkeypatch.setattr(Trainer, "train_epoch", original)
    resumed = Trainer(model, config, small_pairs, checkpoint, live_dir=live)
    resumed.fit()

    assert resumed.epoch == 3
    assert_same(final_state(checkpoint), final_state(uninterrupted))
    logged = pd.read_csv(live / "plots" / "metrics" / "train" / "g_total.tsv", sep="\t")
    assert list(logged["step"]) == [1, 2, 3]
    assert sorted(p.name for p in (live / "plots" / "images" / "samples").iterdir()) == ["epoch-0003.png"]


@pytest.mark.realdata
def test_checkpoint_round_trip_through_the_inference_api(trained, small_pairs):
    model, config, checkpoint = trained
    trainer = Trainer(model, config, small_pairs, checkpoint)
    assert trainer.resume() and trainer.epoch == 3
    different = np.flatnonzero(~small_pairs.same_image)[:3]
    batch = default_collate([small_pairs[int(i)] for i in different])
    arrays = {key: value.numpy() for key, value in batch.items()}
    trainer.generator.eval()
    with torch.no_grad():
        x = trainer.inputs(batch, training=False)
        expected = trainer.generator(x.condition, x.context, x.condition_maps, x.source_maps)
    levels = (expected.clamp(-1, 1) + 1) * 127.5
    truncated_levels = levels.numpy().astype(np.uint8).transpose(0, 2, 3, 1)  # the authors' tensor2im: astype(uint8)
    expected = levels.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()

    args = (arrays["source"], arrays["source_landmarks"], arrays["mask"], arrays["condition"],
            arrays["condition_landmarks"])
    raw = AnonyGANInference.from_checkpoint(checkpoint, device="cpu", batch_size=2).anonymise(*args)
    assert raw.dtype == np.uint8 and raw.shape == (3, *SMALL, 3)
    assert np.array_equal(raw, expected)
    truncated = AnonyGANInference.from_checkpoint(checkpoint, InferenceConfig(quantise="truncate"),
                                                  device="cpu").anonymise(*args)
    assert np.array_equal(truncated, truncated_levels) and (raw - truncated <= 1).all() and (raw != truncated).any()

    composited = AnonyGANInference.from_checkpoint(checkpoint, InferenceConfig(output="composited"),
                                                   device="cpu").anonymise(*args)
    outside = ~arrays["mask"]
    assert np.array_equal(composited[outside], arrays["source"][outside])
    assert np.array_equal(composited[arrays["mask"]], raw[arrays["mask"]])

    with pytest.raises(ValueError, match="source_mask must be"):
        AnonyGANInference.from_checkpoint(checkpoint, device="cpu").anonymise(
            *args[:2], arrays["mask"].astype(np.uint8), *args[3:])
    broken = AnonyGANInference.from_checkpoint(checkpoint, device="cpu")
    with torch.no_grad():
        broken.generator.image_decoder[-2].bias.fill_(float("nan"))
    with pytest.raises(ValueError, match="non-finite pixels for faces 0..2"):
        broken.anonymise(*args)
    not_a_checkpoint = checkpoint.with_name("notes.pt")
    not_a_checkpoint.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="notes.pt is not a readable anonygan checkpoint"):
        AnonyGANInference.from_checkpoint(not_a_checkpoint)


@pytest.mark.realdata
def test_a_killed_data_loader_worker_stops_training_at_once_with_a_clear_error(small_pairs, tmp_path, monkeypatch):
    model, config = tiny_configs(**{"train.workers": 1})
    trainer = Trainer(model, config, small_pairs, tmp_path / "checkpoint.pt")
    trainer_process, load = os.getpid(), PairData.__getitem__

    def killed_in_a_worker(self, index):
        if os.getpid() != trainer_process:
            os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer does
        return load(self, index)

    monkeypatch.setattr(PairData, "__getitem__", killed_in_a_worker)
    with deadline(120), pytest.raises(WorkerDiedError, match=r"data loader worker process ended abruptly .* epoch 1"):
        trainer.fit()


@pytest.mark.realdata
def test_a_non_finite_loss_stops_training_with_a_clear_error(small_pairs, tmp_path):
    model, config = tiny_configs()
    trainer = Trainer(model, config, small_pairs, tmp_path / "checkpoint.pt")
    with torch.no_grad():
        trainer.generator.image_decoder[-2].weight.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"g_adversarial = nan at epoch 1, step 1.*No checkpoint was written"):
        trainer.fit()
    assert not (tmp_path / "checkpoint.pt").exists()


@pytest.mark.realdata
@pytest.mark.parametrize("method", VARIANTS)
def test_stage_trains_each_variant_from_a_pair_manifest(method, small_prepared, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # DVCLive looks for a DVC repository from the working directory
    layout = Layout(tmp_path)
    TRAIN_PAIRS.write(layout.train_pairs, pair_manifest(small_prepared))
    layout.prepared("celeba").parent.mkdir(parents=True)
    layout.prepared("celeba").symlink_to(small_prepared)
    checkpoint = train_stage.run(params("small"), layout, method)
    assert checkpoint == tmp_path / "models" / method / "checkpoint.pt"
    state = load_checkpoint(checkpoint)
    model, _ = params().variant(method)
    assert state["epoch"] == 1 and state["model_config"]["landmarks"] == model.landmarks
    assert state["model_config"]["landmark_attention"] == model.landmark_attention
    assert (tmp_path / "dvclive" / method / "metrics.json").is_file()
