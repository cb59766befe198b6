"""The authors' released weights: safe reading, the variant from the keys, the mapping onto our networks,
the download-released stage through the Google Drive path, and the two methods end to end.

The real files cannot be downloaded here. The synthetic ones have their exact layouts (keys, shapes,
dtypes from ../shared/reference/released-checkpoints), random tensors, and the other entries of a
Lightning checkpoint, `callbacks` keyed by the ModelCheckpoint class object included.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
import pickle
import shutil
import sys
import types
from collections import OrderedDict

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from anonygan import released as anonygan_released
from anonygan.config import InferenceConfig, ModelConfig
from anonygan.data import landmark_maps
from anonygan.inference import AnonyGANInference
from anonygan.model import Generator
from anonygan.released import VariantMismatch
from baselines.ciagan import released as ciagan_released
from baselines.ciagan.anonymiser import Ciagan
from baselines.ciagan.config import CiaganInferenceConfig, CiaganModelConfig
from baselines.ciagan.model import Generator as CiaganGenerator
from baselines.interface import identity_order, load_batch
from facedata.images import read_rgb
from facedata.prepared import PreparedDataset
from infra.errors import ParamsError
from infra.fetch import ChecksumError, Remote
from infra.records import TEST_PAIRS, AnonymiseSummary, ReleaseStatus, Results, pair_table
from infra.weight_files import CheckpointError, LayoutMismatch, read_weights
from pipelines import anonymise, download_released, evaluate, report
from pipelines.config import from_mapping
from pipelines.layout import Layout
from tests.helpers import REPO, google_drive_page, make_batch, params_mapping, write_params, write_source

pytestmark = pytest.mark.usefixtures("one_thread")
VARIANTS = {"68lm_chatt": (68, True), "29lm_no_chatt": (29, False)}
LIGHTNING = "pytorch_lightning.callbacks.model_checkpoint"


# --- synthetic files ----------------------------------------------------------------------------

def synthetic_state(entries: list[dict], seed: int) -> OrderedDict[str, torch.Tensor]:
    """Random tensors of the listed shapes and dtypes, spread like trained ones (eval-mode outputs stay finite)."""
    generator = torch.Generator().manual_seed(seed)
    state = OrderedDict()
    for entry in entries:
        shape, leaf = entry["shape"], entry["key"].rsplit(".", 1)[-1]
        if entry["dtype"] == "int64":
            value = torch.randint(1, 50_000, shape, generator=generator)
        elif leaf == "running_var":
            value = torch.rand(shape, generator=generator) + 0.5
        elif leaf in ("running_mean", "bias"):
            value = 0.1 * torch.randn(shape, generator=generator)
        elif leaf in ("weight_u", "weight_v"):
            value = F.normalize(torch.randn(shape, generator=generator), dim=0)
        elif entry["module_type"].endswith("Norm2d"):
            value = 1 + 0.1 * torch.randn(shape, generator=generator)
        else:  # PyTorch's default initialisation spread, 1 / sqrt(3 fan_in)
            value = torch.randn(shape, generator=generator) / math.sqrt(3 * math.prod(shape[1:]))
        if ".gcn.conv_proj." in entry["key"]:
            # AnonyGAN's graph nodes sum over every pixel: random projections overflow the six graph blocks
            # at the test crop size in eval mode, which trained ones do not.
            value = 0.01 * value
        assert str(value.dtype) == f"torch.{entry['dtype']}", entry
        state[entry["key"]] = value
    return state


class ModelCheckpoint:
    """Pickled by reference as Lightning's class, which is what a Lightning < 1.5 checkpoint keys `callbacks` by."""


ModelCheckpoint.__module__ = LIGHTNING


@contextlib.contextmanager
def lightning_importable():
    """pickle stores a class as (module, name) after checking it imports; make that hold only while saving."""
    names = [".".join(LIGHTNING.split(".")[:depth]) for depth in (1, 2, 3)]
    assert not any(name in sys.modules for name in names)
    sys.modules.update({name: types.ModuleType(name) for name in names})
    sys.modules[LIGHTNING].ModelCheckpoint = ModelCheckpoint
    try:
        yield
    finally:
        for name in names:
            del sys.modules[name]


def lightning_file(state: OrderedDict, legacy: bool = False) -> bytes:
    """A Lightning 1.4 checkpoint of the authors' run holding `state` (test.py's file, as far as it is known)."""
    adam = {"state": {0: {"step": 44_800, "exp_avg": torch.zeros(3), "exp_avg_sq": torch.zeros(3)}},
            "param_groups": [{"lr": 2e-4, "betas": (0.5, 0.999), "params": [0]}]}
    checkpoint = {"epoch": 699, "global_step": 44_799, "pytorch-lightning_version": "1.4.9", "state_dict": state,
                  "callbacks": {ModelCheckpoint: {"monitor": None, "best_model_path": "", "dirpath": "None/ckpts"}},
                  "optimizer_states": [adam] * 3, "lr_schedulers": [{"last_epoch": 700, "lr_lambdas": [{}]}] * 3}
    buffer = io.BytesIO()
    with lightning_importable():
        torch.save(checkpoint, buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


def state_file(state: OrderedDict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def anonygan_states(released_layouts) -> dict[str, OrderedDict]:
    """Both variants with optional submodules in registration order: 68 + D_gan2 + D_id, 29 + ArcFace as D_id."""
    layout = released_layouts["anonygan"]
    optional = {flag: entry["state_dict"] for flag, entry in layout["optional_submodules_if_trained_with"].items()}
    v68, v29 = (layout["variants"][name]["state_dict"] for name in VARIANTS)
    d_pose = next(i for i, entry in enumerate(v68) if entry["key"].startswith("D_pose."))
    entries_68 = v68[:d_pose] + optional["--double_discriminator"] + v68[d_pose:] + optional["--id_discriminator"]
    entries_29 = v29 + optional["--pretrained_id_discriminator"]
    return {"68lm_chatt": synthetic_state(entries_68, 0), "29lm_no_chatt": synthetic_state(entries_29, 1)}




@pytest.fixture(scope="module")
def ciagan_state(released_layouts) -> OrderedDict:
    return synthetic_state(released_layouts["ciagan"]["state_dict"], 2)


def plain_anonygan_generator(state: OrderedDict, variant: str) -> Generator:
    """The test's own mapping: G.* in order onto our generator (the authors' layer types), plain load_state_dict."""
    landmarks, attention = VARIANTS[variant]
    generator = Generator(ModelConfig(landmarks=landmarks, landmark_attention=attention))
    theirs = [value for key, value in state.items() if key.startswith("G.")]
    generator.load_state_dict(OrderedDict(zip(generator.state_dict(), theirs, strict=True)), strict=True)
    return generator.eval()


def plain_ciagan_generator(state: OrderedDict) -> CiaganGenerator:
    generator = CiaganGenerator(CiaganModelConfig())
    generator.load_state_dict(OrderedDict(zip(generator.state_dict(), state.values(), strict=True)), strict=True)
    return generator


def generator_inputs(landmarks: int, size=(16, 12), batch: int = 2):
    random = torch.Generator().manual_seed(0)
    height, width = size
    images = [torch.rand(batch, 3, height, width, generator=random) * 2 - 1 for _ in range(2)]
    points = torch.rand(2, batch, 68, 2, generator=random) * torch.tensor([width - 1, height - 1])
    indices = ModelConfig(landmarks=landmarks).landmark_indices
    return (*images, *(landmark_maps(p, indices, height, width) for p in points))


# --- our networks against the authors' layouts ------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("attention_output", ["conv_transpose", "conv"])
def test_our_networks_pair_with_the_authors_tensors(released_layouts, variant, attention_output):
    """The authors' ConvTranspose2d (our default) pairs tensor for tensor; a Conv2d differs at the attention output."""
    entries = released_layouts["anonygan"]["variants"][variant]["state_dict"]
    landmarks, attention = VARIANTS[variant]
    generator = Generator(ModelConfig(landmarks=landmarks, landmark_attention=attention,
                                      attention_output=attention_output))
    ours = generator.state_dict()
    theirs = [entry for entry in entries if entry["key"].startswith("G.")]
    assert len(theirs) == len(ours) == (264 if attention else 263)
    differing = [(entry["key"], key) for entry, (key, value) in zip(theirs, ours.items(), strict=True)
                 if entry["shape"] != list(value.shape) or entry["key"].rsplit(".", 1)[1] != key.rsplit(".", 1)[1]]
    expected = [] if attention_output == "conv_transpose" else [("G.conv_att3.weight", "attention_decoder.2.weight")]
    assert differing == expected
    assert [len([e for e in entries if e["key"].startswith(p)]) for p in ("D_gan.", "D_pose.")] == [32, 32]


def test_the_attention_output_conversion_is_exact():
    weight, x = torch.randn(64, 1, 1, 1), torch.randn(2, 64, 5, 4)  # authors' ConvTranspose2d(64, 1, 1): in x out
    converted = anonygan_released.conv_transpose_1x1_as_conv(weight)
    torch.testing.assert_close(F.conv2d(x, converted), F.conv_transpose2d(x, weight))
    with pytest.raises(LayoutMismatch, match="only a 1x1"):
        anonygan_released.conv_transpose_1x1_as_conv(torch.randn(64, 1, 3, 3))


# --- reading without running anything ---------------------------------------------------------------

@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_a_lightning_checkpoint_reads_without_lightning_and_keeps_only_the_state_dict(anonygan_states, tmp_path,
                                                                                     legacy):
    state = OrderedDict(list(anonygan_states["68lm_chatt"].items())[:40])
    path = tmp_path / "anonygan.ckpt"
    path.write_bytes(lightning_file(state, legacy))
    with pytest.raises(pickle.UnpicklingError, match="ModelCheckpoint"):  # why the restricted unpickler
        torch.load(path, weights_only=True)
    weights = read_weights(path)
    assert weights.lightning and list(weights.state_dict) == list(state)
    assert all(torch.equal(weights.state_dict[key], value) for key, value in state.items())
    assert weights.stand_ins == (f"{LIGHTNING}.ModelCheckpoint",)
    assert weights.info == {"epoch": 699, "global_step": 44_799, "pytorch-lightning_version": "1.4.9"}
    assert not any(name.startswith("pytorch_lightning") for name in sys.modules)


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_pickled_code_is_never_run(tmp_path):
    marker, path = tmp_path / "ran", tmp_path / "evil.ckpt"
    torch.save({"state_dict": OrderedDict(w=torch.ones(2)), "hyper_parameters": Payload(marker)}, path)
    weights = read_weights(path)
    assert not marker.exists() and f"{os.system.__module__}.system" in weights.stand_ins
    assert list(weights.state_dict) == ["w"]


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("damage", ["half", "empty", "garbage"])
def test_a_truncated_or_corrupt_file_is_refused_naming_it(tmp_path, legacy, damage):
    data = lightning_file(OrderedDict(w=torch.randn(50_000)), legacy)
    damaged = {"half": data[: len(data) // 2], "empty": b"", "garbage": bytes(range(256)) * 16}[damage]
    path = tmp_path / f"{damage}.ckpt"
    path.write_bytes(damaged)
    with pytest.raises(CheckpointError, match=rf"{damage}\.ckpt \({len(damaged):,} bytes\).*truncated or corrupt"):
        read_weights(path)


def test_files_that_hold_no_usable_state_dict_are_refused(tmp_path):
    torch.save({"epoch": 3, "weights": [1, 2]}, tmp_path / "odd.ckpt")
    with pytest.raises(CheckpointError, match=r"odd\.ckpt: entry 'epoch' \(int\) is not a tensor"):
        read_weights(tmp_path / "odd.ckpt")
    torch.save({"state_dict": {"w": torch.tensor([1.0, float("nan")])}}, tmp_path / "nan.ckpt")
    with pytest.raises(CheckpointError, match=r"nan\.ckpt: w \[2\] holds NaN"):
        read_weights(tmp_path / "nan.ckpt")


# --- AnonyGAN: variant and mapping ------------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_the_variant_is_read_from_the_keys_and_extra_discriminators_are_ignored_with_a_note(anonygan_states,
                                                                                              variant):
    loaded = anonygan_released.load(anonygan_states[variant])
    assert (loaded.variant.landmarks, loaded.variant.landmark_attention) == VARIANTS[variant]
    config = loaded.generator.config
    assert (config.landmarks, config.landmark_attention, config.base_channels) == (*VARIANTS[variant], 64)
    assert not loaded.generator.training
    ignored = {"68lm_chatt": ["D_gan2.* (32 tensors", "D_id.* (32 tensors"], "29lm_no_chatt": ["D_id.* (475 tensors"]}
    for expected in ignored[variant]:
        assert any(expected in note for note in loaded.notes), loaded.notes


def test_a_file_of_the_other_variant_is_refused_naming_the_keys(anonygan_states):
    with pytest.raises(VariantMismatch) as refused:
        anonygan_released.load(anonygan_states["29lm_no_chatt"], landmarks=68, landmark_attention=True)
    for part in ("G.stream2_down.1.weight [64, 58, 7, 7]", "D_pose.down1.0.weight [64, 32, 4, 4]",
                 "G.ch_att.conv.weight absent", "29 landmarks, Landmark Attention off",
                 "asked for: 68 landmarks, Landmark Attention on"):
        assert part in str(refused.value)
    # What test.py's strict=False would silently drop: the attention weight of a 68-attention file.
    with pytest.raises(VariantMismatch, match=r"G\.ch_att\.conv\.weight \[1, 1, 3\] present"):
        anonygan_released.load(anonygan_states["68lm_chatt"], landmark_attention=False)


def test_a_file_whose_parts_disagree_or_that_lacks_tensors_is_refused(anonygan_states):
    state = OrderedDict(anonygan_states["68lm_chatt"])
    state["D_pose.down1.0.weight"] = torch.zeros(64, 32, 4, 4)
    with pytest.raises(VariantMismatch, match=r"D_pose\.down1\.0\.weight \[64, 32, 4, 4\] should then have 3 \+ 68"):
        anonygan_released.load(state)
    state = OrderedDict(anonygan_states["68lm_chatt"])
    del state["G.att.0.gcn.blocker.running_mean"]
    with pytest.raises(LayoutMismatch, match=r"G -> our generator, position \d+: the authors' "
                                             r"att\.0\.gcn\.blocker\.running_var .* vs our blocks\.0\.graph\.norm"
                                             r"\.running_mean .*: different entries"):
        anonygan_released.load(state)
    generator_only = OrderedDict((k, v) for k, v in anonygan_states["68lm_chatt"].items() if k.startswith("G."))
    with pytest.raises(LayoutMismatch, match="submodules G; an AnonyGAN checkpoint has G, D_gan, D_pose"):
        anonygan_released.load(generator_only)


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_loaded_generator_equals_a_plain_load_state_dict_of_the_mapped_keys(anonygan_states, variant):
    state = anonygan_states[variant]
    loaded = anonygan_released.load(state).generator
    plain = plain_anonygan_generator(state, variant)
    inputs = generator_inputs(VARIANTS[variant][0])
    with torch.no_grad():
        output = loaded(*inputs)
        assert torch.isfinite(output).all() and torch.equal(output, plain(*inputs))
        hidden = torch.randn(1, 64, 6, 5)  # the attention output computes the authors' transposed convolution
        torch.testing.assert_close(loaded.attention_decoder[-2](hidden),
                                   F.conv_transpose2d(hidden, state["G.conv_att3.weight"]))


# --- CIAGAN -----------------------------------------------------------------------------------------

def test_the_ciagan_generator_equals_a_plain_load_state_dict_of_the_mapped_keys(ciagan_state):
    loaded, notes = ciagan_released.load(ciagan_state)
    plain = plain_ciagan_generator(ciagan_state)
    assert notes == () and loaded.training  # the authors' test.py never calls eval()
    x, one_hot = torch.rand(1, 6, 128, 128), torch.eye(1200)[[1199]]
    with torch.no_grad():
        for _ in range(2):  # training mode: each forward runs a power iteration, in both the same way
            assert torch.equal(loaded(x, one_hot), plain(x, one_hot))
        assert torch.equal(loaded.eval()(x, one_hot), plain.eval()(x, one_hot))


def test_a_ciagan_file_of_another_layout_is_refused(ciagan_state, tmp_path):
    with pytest.raises(LayoutMismatch, match="246 tensors, our network 248; the first 246 pair up"):
        ciagan_released.load(OrderedDict(list(ciagan_state.items())[:-2]))
    renamed = OrderedDict((key.replace("conv0.conv_r1.conv2d.weight_orig", "conv0.conv_r1.conv2d.weight"), value)
                          for key, value in ciagan_state.items())
    with pytest.raises(LayoutMismatch, match=r"position 1: the authors' conv0\.conv_r1\.conv2d\.weight .*different"):
        ciagan_released.load(renamed)
    (tmp_path / "modelG.pth").write_bytes(lightning_file(OrderedDict(w=torch.ones(1))))
    with pytest.raises(CheckpointError, match="is a PyTorch Lightning checkpoint, not CIAGAN's"):
        ciagan_released.load(tmp_path / "modelG.pth")


def test_spectral_norm_updates_face_by_face_as_the_authors_test_script(ciagan_state):
    images = np.random.default_rng(0).integers(0, 256, (3, 64, 52, 3), dtype=np.uint8)
    masks = np.zeros((3, 64, 52), bool)
    masks[:, 20:50, 12:40] = True
    batch = make_batch(images, masks, ["a", "b", "a"])
    settings = CiaganInferenceConfig(spectral_norm="update")
    updating = Ciagan(ciagan_released.load(ciagan_state)[0], ["a", "b"], settings, device="cpu", batch_size=8)
    assert updating.generator.training and updating.batch_size == 1
    u = updating.generator.encoder[0][0].conv1.conv.weight_u.clone()
    out = updating.anonymise(batch)
    assert not torch.equal(updating.generator.encoder[0][0].conv1.conv.weight_u, u)
    # The same: one face per forward through a generator in training mode, in order.
    reference = Ciagan(plain_ciagan_generator(ciagan_state), ["a", "b"], settings, device="cpu")
    faces = [reference.anonymise(make_batch(images[i:i + 1], masks[i:i + 1], [name]))
             for i, name in enumerate(["a", "b", "a"])]
    assert np.array_equal(out, np.concatenate(faces))
    frozen = Ciagan(plain_ciagan_generator(ciagan_state), ["a", "b"], CiaganInferenceConfig(spectral_norm="frozen"),
                    device="cpu", batch_size=8)
    u = frozen.generator.encoder[0][0].conv1.conv.weight_u.clone()
    assert not frozen.generator.training and np.array_equal(frozen.anonymise(batch), frozen.anonymise(batch))
    assert torch.equal(frozen.generator.encoder[0][0].conv1.conv.weight_u, u)


# --- settings -----------------------------------------------------------------------------------------

def test_released_settings_are_checked():
    for change, message in (
        ({"released": {"x": {"model": "anonygan", "sha256": "abc"}}}, "released.x.sha256 must be 64 hex digits"),
        ({"released": {"x": {"model": "ciagan", "landmarks": 68}}}, "released.x.landmarks is an AnonyGAN setting"),
        ({"released": {"x": {"sha256": None}}}, "released.x.model is missing"),
    ):
        with pytest.raises(ParamsError, match=message):
            from_mapping(change)
    mapping = params_mapping()
    del mapping["released"]["ciagan-released"]
    with pytest.raises(ParamsError, match="methods.ciagan-released loads the ciagan authors' weights: it needs "
                                          "released.ciagan-released with model: ciagan"):
        from_mapping(mapping)


# --- the download stage through the Google Drive path -----------------------------------------------

def serve_on_drive(file_server, name: str, data: bytes, filename: str) -> Remote:
    """`data` behind a Drive confirmation page on the test server, as the authors' links serve their files."""
    file_server.files[f"/{name}/uc"] = ("text/html; charset=utf-8", google_drive_page(f"/{name}/download", name))
    file_server.files[f"/{name}/download"] = data
    return Remote(filename, file_server.url(f"/{name}/uc?id={name}"), None, google_drive_id=name)


def use_remote(monkeypatch, model: str, remote: Remote) -> None:
    monkeypatch.setitem(download_released.RELEASES, model, (remote, download_released.RELEASES[model][1]))


@pytest.fixture(scope="module")
def ciagan_bytes(ciagan_state) -> bytes:
    return state_file(ciagan_state)


FAST = {"download": {"retries": 0, "timeout_s": 10}}


def quick_params() -> dict:
    """params.yaml with downloads that give up at the first failure."""
    return {**params_mapping(), **FAST}


def test_the_first_digest_is_recorded_the_file_reused_and_a_changed_one_refused(file_server, ciagan_bytes, tmp_path,
                                                                               monkeypatch, capsys):
    use_remote(monkeypatch, "ciagan", serve_on_drive(file_server, "ciagan", ciagan_bytes, "modelG.pth"))
    layout, params = Layout(tmp_path), from_mapping(quick_params())
    folder = layout.released("ciagan-released")
    status = download_released.run(params, layout, "ciagan-released")
    digest = hashlib.sha256(ciagan_bytes).hexdigest()
    assert status.available and status.sha256 == digest and status.bytes == len(ciagan_bytes)
    assert ReleaseStatus.read(folder) == status and not status.sha256_pinned
    assert f"SHA-256 {digest} (first check of this file" in capsys.readouterr().out
    assert [path for path, _ in file_server.requests] == [
        "/ciagan/uc?id=ciagan", "/ciagan/download?id=ciagan&export=download&confirm=t&uuid=u-1"]
    download_released.run(params, layout, "ciagan-released")  # the file on disk is checked, nothing fetched
    assert len(file_server.requests) == 2 and "matches the digest recorded" in capsys.readouterr().out
    # The source changes: a new download must have the recorded digest, and nothing of it is kept.
    (folder / "modelG.pth").unlink()
    file_server.files["/ciagan/download"] = ciagan_bytes[:-4] + b"0000"
    with pytest.raises(ChecksumError, match=f"expected {digest}.*the one recorded at the first download in "):
        download_released.run(params, layout, "ciagan-released")
    assert sorted(path.name for path in folder.iterdir()) == ["status.json"]
    # A file changed on disk is refused, not used.
    (folder / "modelG.pth").write_bytes(b"another file")
    with pytest.raises(ChecksumError, match=f"modelG.pth has SHA-256 [0-9a-f]{{64}}, not {digest}.*the file changed"):
        download_released.run(params, layout, "ciagan-released")


def test_a_pinned_digest_and_a_truncated_download_stop_the_stage_in_one_line(file_server, ciagan_bytes, tmp_path,
                                                                              monkeypatch, capsys):
    use_remote(monkeypatch, "ciagan", serve_on_drive(file_server, "ciagan", ciagan_bytes[:1_000_000], "modelG.pth"))
    layout = Layout(tmp_path)
    mapping = quick_params()
    mapping["released"]["ciagan-released"]["sha256"] = "ab" * 32
    write_params(layout, mapping)
    with pytest.raises(SystemExit) as stop:
        download_released.main(["ciagan-released"], layout=layout)
    line, = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and line.startswith("download-released@ciagan-released: modelG.pth from http")
    assert line.endswith(f"expected {'ab' * 32}. The download was deleted; the source may have changed or been "
                         "corrupted. The expected digest is the one pinned in released.ciagan-released.sha256.")
    mapping["released"]["ciagan-released"]["sha256"] = None
    write_params(layout, mapping)
    with pytest.raises(SystemExit):
        download_released.main(["ciagan-released"], layout=layout)
    line, = capsys.readouterr().err.strip().splitlines()
    assert "modelG.pth (1,000,000 bytes) is not a readable PyTorch file: it is probably truncated or corrupt" in line
    assert line.endswith("Delete it to download it again")
    assert ReleaseStatus.read(layout.released("ciagan-released")) is None  # nothing recorded for an unusable file


# --- the methods end to end -------------------------------------------------------------------------------

@pytest.fixture
def test_sets(small_prepared, tmp_path) -> Layout:
    """A pipeline layout whose CelebA and LFW test sets are 4 pairs each of the 64x52 real faces (2 identities)."""
    layout = Layout(tmp_path / "repo")
    ok = PreparedDataset(small_prepared).ok.sort_index()
    first, second = (list(ok.loc[ok["identity"] == identity, "key"]) for identity in sorted(ok["identity"].unique()))
    lfw = {"fold": [1, 1, 2, 2], "same": [True, False, True, False], "first": second[1:] + second[:1]}
    for dataset, columns in (("celeba", {}), ("lfw", lfw)):
        TEST_PAIRS[dataset].write(layout.test_pairs(dataset), pair_table(TEST_PAIRS[dataset], ok, second, first,
                                                                         **columns))
        layout.prepared(dataset).parent.mkdir(parents=True, exist_ok=True)
        layout.prepared(dataset).symlink_to(small_prepared)
        write_source(layout, dataset, small_prepared)
    layout.reports.mkdir()
    shutil.copy(REPO / "reports" / "paper_numbers.yaml", layout.paper_numbers)
    return layout


def pipeline_params(**released) -> dict:
    """The default params with three methods (the two released ones beside the unmodified crop), small and quick."""
    mapping = quick_params()
    mapping["methods"] = {name: entry for name, entry in mapping["methods"].items()
                          if name in ("original", "anonygan-released", "ciagan-released")}
    mapping["released"] = {name: {**entry, **released.get(name, {})} for name, entry in mapping["released"].items()}
    mapping.update(anonymise={"batch_size": 3}, evaluate={"metrics": ["detection_dlib", "pose_error"]})
    mapping["metrics"]["pose_error"]["detector"] = "dlib"  # FAN's weights cannot be fetched offline
    return mapping


def run_stages(layout: Layout, mapping: dict) -> dict[str, pd.DataFrame]:
    """Every stage after `pairs` for the methods of `mapping`; the tables, by dataset."""
    params = from_mapping(mapping)
    for method in params.released:
        download_released.run(params, layout, method)
    for method in params.methods:
        anonymise.run(params, layout, method)
        evaluate.run(params, layout, method)
    return {dataset: frame.set_index("method") for dataset, frame in report.run(params, layout).items()}


@pytest.mark.realdata
@pytest.mark.slow
def test_synthetic_released_files_go_through_download_load_anonymise_evaluate_and_report(
        test_sets, anonygan_states, ciagan_bytes, ciagan_state, file_server, monkeypatch):
    layout = test_sets
    use_remote(monkeypatch, "anonygan", serve_on_drive(file_server, "anonygan",
                                                       lightning_file(anonygan_states["68lm_chatt"]), "anonygan.ckpt"))
    use_remote(monkeypatch, "ciagan", serve_on_drive(file_server, "ciagan", ciagan_bytes, "modelG.pth"))
    # A file of another variant than the one pinned is refused before anything uses it.
    with pytest.raises(VariantMismatch, match=r"68 landmarks, Landmark Attention on \(G\.stream2_down\.1\.weight "
                                              r"\[64, 136, 7, 7\].*asked for: 29 landmarks"):
        download_released.run(from_mapping(pipeline_params(**{"anonygan-released": {"landmarks": 29}})), layout,
                              "anonygan-released")

    tables = run_stages(layout, pipeline_params())

    contents = ReleaseStatus.read(layout.released("anonygan-released")).details
    assert (contents["landmarks"], contents["landmark_attention"]) == (68, True)
    assert any(f"not run: {LIGHTNING}.ModelCheckpoint" in note for note in contents["notes"])
    assert any("ignored D_gan2.*" in note for note in contents["notes"])
    # The stage's images are those of the same weights loaded by a plain load_state_dict, through the same code.
    manifest = TEST_PAIRS["celeba"].read(layout.test_pairs("celeba"))
    faces = PreparedDataset(layout.prepared("celeba"))
    batch = load_batch(manifest, faces, faces)
    # (in the stage's batches of 3: equal floating-point work)
    plain = AnonyGANInference(plain_anonygan_generator(anonygan_states["68lm_chatt"], "68lm_chatt"),
                              InferenceConfig(), torch.device("cpu"), batch_size=3)
    ciagan = Ciagan(plain_ciagan_generator(ciagan_state), identity_order(manifest), CiaganInferenceConfig(),
                    device="cpu")
    for method, expected in (("anonygan-released", plain.anonymise(batch.source, batch.source_landmarks,
                                                                   batch.source_mask, batch.condition,
                                                                   batch.condition_landmarks)),
                             ("ciagan-released", ciagan.anonymise(batch))):
        written = np.stack([read_rgb(layout.outputs("celeba", method) / f"{i}.png") for i in range(4)])
        assert np.array_equal(written, expected), method
    for dataset, frame in tables.items():
        assert list(frame.index) == ["original", "anonygan-released", "ciagan-released"], dataset
        assert frame["available"].all() and (frame["n"] == 4).all() and (frame["n_skipped"] == 0).all()
        assert frame["detection_dlib"].between(0, 1).all(), frame["detection_dlib"]
    markdown = (layout.reports / "table1.md").read_text()
    assert "| anonygan-released |" in markdown and "not available" not in markdown


@pytest.mark.realdata
@pytest.mark.slow
def test_offline_the_released_methods_are_reported_not_available(test_sets, monkeypatch, capsys):
    layout = test_sets
    for model in ("anonygan", "ciagan"):  # what an offline machine gets: no answer
        use_remote(monkeypatch, model, Remote(f"{model}.bin", "http://127.0.0.1:9/uc?id=x", None, google_drive_id="x"))
    tables = run_stages(layout, pipeline_params())
    # The stage's log shows each value to 6 significant digits, as the JSON holds it in full.
    pose = Results.read(layout.results("lfw", "original")).metrics["pose_error"]
    assert f"lfw/original: pose_error = {pose.value:.6g} (n={pose.n}," in capsys.readouterr().out
    for method in ("anonygan-released", "ciagan-released"):
        status = ReleaseStatus.read(layout.released(method))
        assert not status.available and "failed after 1 attempts" in status.reason
        for dataset in ("celeba", "lfw"):
            summary = AnonymiseSummary.read(layout.outputs(dataset, method) / "summary.json")
            assert summary.anonymised == 0 and summary.skipped == 4
    for dataset, frame in tables.items():
        assert list(frame["available"]) == [True, False, False], dataset
        assert frame.loc["anonygan-released", "note"].startswith("the authors' weights are not available: ")
        assert frame.loc["ciagan-released", "n"] == 4 and frame.loc["ciagan-released", "n_skipped"] == 4
        assert np.isnan(frame.loc["ciagan-released", "detection_dlib"])
        assert frame.loc["original", "detection_dlib"] >= 0
    markdown = (layout.reports / "table2.md").read_text()
    assert "| anonygan-released | not available | not available |" in markdown
    assert "- Not available: ciagan-released: the authors' weights are not available: ciagan.bin:" in markdown
