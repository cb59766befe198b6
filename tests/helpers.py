"""Builders shared by the tests: repository copies, params, fake prepared datasets, face batches, an HTTP server.

Tests import from here (never from another test module); fixtures live in conftest.py.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import csv
import hashlib
import io
import json
import os
import pickle
import re
import shutil
import signal
import struct
import subprocess
import sys
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from PIL import Image

from anonygan.config import ModelConfig, TrainConfig
from baselines.interface import FaceBatch
from facedata.crops import PREPARE_VERSION
from facedata.prepared import PreparedDataset, crop_relpath, mask_relpath
from infra.fetch import file_digest
from infra.records import TEST_PAIRS, TRAIN_PAIRS, pair_table
from metrics import weights
from pipelines import config
from pipelines.layout import Layout
from pipelines.profile import changes, overlay

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ANONYGAN_SHARED_DATA", REPO.parent / "shared" / "data"))
#: The exact layouts of the authors' released weight files (key lists, shapes, dtypes; see its README).
RELEASED_LAYOUTS = SHARED_DATA.parent / "reference" / "released-checkpoints"
#: Prepared minis are cached here between test runs; rows are keyed by photo bytes and settings. One folder per
#: processing version, so checkouts with another version (the cache is shared) never rewrite each other's.
PREPARED_CACHE = REPO / ".cache" / f"test-prepared-v{PREPARE_VERSION}"
#: Metric features of real crops, cached by content between runs.
METRICS_CACHE = REPO / ".cache" / "metrics"
#: The tiny test crop of AnonyGAN's tests: divisible by 4, large enough for the PatchGANs' 6 layers.
SMALL = (64, 52)
#: CIAGAN's protocol list as the shared data holds it: tests never download it.
PROTOCOL_LIST = SHARED_DATA / "celeba-protocol" / "legit_indices.npy"


# --- the repository and its params ------------------------------------------------------------

def repository_copy(destination: Path) -> Layout:
    """A fresh git repository holding the project's tracked and unignored files, committed once."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, destination / name)
    layout = Layout(destination)
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "copy"]):
        git(layout, *command)
    return layout


def git(layout: Layout, *args: str) -> str:
    """Run git in the layout's repository (as a test identity); a failure shows its whole output."""
    result = subprocess.run(["git", "-c", "user.name=tests", "-c", "user.email=tests@localhost", *args],
                            cwd=layout.root, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def dvc(layout: Layout, *args: str) -> str:
    """Run dvc in the layout's repository; a failure shows its whole output."""
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=layout.root, capture_output=True, text=True,
                            env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def params_mapping(profile: str | None = None, **roots: Path) -> dict[str, Any]:
    """params.yaml as plain data, with a profile's values and dataset roots (celeba=..., lfw=...) applied.

    A CelebA root comes with the shared copy of CIAGAN's identity list, so no stage downloads it.
    """
    mapping = yaml.safe_load((REPO / "params.yaml").read_text())
    if profile is not None:
        overlay(mapping, changes(profile, Layout(REPO)))
    for dataset, root in roots.items():
        mapping["data"][dataset]["root"] = str(root)
    if "celeba" in roots:
        mapping["data"]["celeba"]["identity_list_file"] = str(PROTOCOL_LIST)
    return mapping


def params(profile: str | None = None, **roots: Path) -> config.Params:
    """Typed params (see `params_mapping`)."""
    return config.from_mapping(params_mapping(profile, **roots))


def profile_from(repository: Path, destination: Path) -> Layout:
    """A layout in `destination` holding a copy of the repository's params.yaml and profiles/."""
    (destination / "profiles").mkdir(parents=True)
    shutil.copy(repository / "params.yaml", destination / "params.yaml")
    for profile in (repository / "profiles").glob("*.yaml"):
        shutil.copy(profile, destination / "profiles" / profile.name)
    return Layout(destination)


def write_params(layout: Layout, mapping: dict[str, Any]) -> None:
    layout.params_file.write_text(yaml.safe_dump(mapping, sort_keys=False))


# --- data -------------------------------------------------------------------------------------

def write_source(layout: Layout, dataset: str, images_dir: Path) -> None:
    """The download stage's record (data/raw/<dataset>/source.json) naming the folder of original photos."""
    layout.raw(dataset).mkdir(parents=True, exist_ok=True)
    layout.source(dataset).write_text(json.dumps({"images_dir": str(images_dir)}))


def write_prepared(root: Path, faces: list[dict[str, Any]]) -> Path:
    """A prepared dataset in the `prepare` stage's layout: crops, masks and an index with status ok.

    Each face is a dict with key, identity, crop ((H, W, 3) uint8), landmarks ((68, 2)) and
    optionally mask ((H, W) bool; default: all False).
    """
    rows = []
    for face in faces:
        crop = face["crop"]
        mask = face.get("mask", np.zeros(crop.shape[:2], bool))
        images = {crop_relpath(face["key"]): crop, mask_relpath(face["key"]): mask.astype(np.uint8) * 255}
        for relpath, image in images.items():
            (root / relpath).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(root / relpath)
        rows.append({"key": face["key"], "identity": str(face["identity"]), "status": "ok", "detail": "",
                     "landmarks": np.asarray(face["landmarks"], np.float32).ravel().tolist()})
    pd.DataFrame(rows).to_parquet(root / "index.parquet", index=False)
    return root


def fake_test_set(layout: Layout, dataset: str) -> None:
    """Two prepared 64x52 faces and one test pair between them."""
    rng = np.random.default_rng(0)
    faces = [{"key": f"{name}.jpg", "identity": name, "landmarks": rng.uniform(10, 40, (68, 2)),
              "crop": rng.integers(0, 256, (64, 52, 3), dtype=np.uint8)} for name in ("a", "b")]
    index = PreparedDataset(write_prepared(layout.prepared(dataset), faces)).index
    lfw = {"first": ["b.jpg"], "same": [False]} if dataset == "lfw" else {}
    TEST_PAIRS[dataset].write(layout.test_pairs(dataset),
                              pair_table(TEST_PAIRS[dataset], index, ["a.jpg"], ["b.jpg"], **lfw))


def make_batch(images: np.ndarray, masks: np.ndarray, identities: list[str] | None = None,
               landmarks: np.ndarray | None = None) -> FaceBatch:
    """A FaceBatch of the given sources; conditions are the sources in reverse order."""
    n = len(images)
    landmarks = np.zeros((n, 68, 2), np.float32) if landmarks is None else landmarks.astype(np.float32)
    return FaceBatch(pair_ids=list(range(n)), source=images, source_mask=masks, source_landmarks=landmarks,
                     condition=images[::-1].copy(), condition_landmarks=landmarks[::-1].copy(),
                     source_identity=identities or [str(i) for i in range(n)])


def prepare_dataset(name: str, dataset: str, root: Path, **data_overrides) -> Path:
    """Run the download (verify) and prepare stages on a local copy, cached; returns its prepared folder.

    CelebA minis are prepared whole (the derived list: each of their identities has 30 photos), so the
    cache holds every photo; tests apply CIAGAN's list on top of it.
    """
    from pipelines import download, prepare

    mapping = params_mapping(**{dataset: root})
    if dataset == "celeba":
        mapping["data"]["celeba"]["identity_list"] = "derived"
    mapping["data"][dataset].update(data_overrides)
    typed, layout = config.from_mapping(mapping), Layout(PREPARED_CACHE / name)
    download.run(typed, layout, dataset)
    prepare.run(typed, layout, dataset)
    return layout.prepared(dataset)


def pair_manifest(prepared: Path) -> pd.DataFrame:
    """Training pairs of a prepared set: each face with itself, and with the next face of its identity."""
    index = PreparedDataset(prepared).ok
    rows = []
    for _, faces in index.groupby("identity"):
        keys = list(faces["key"])
        rows += [(key, key, True) for key in keys]
        rows += [(key, keys[(i + 1) % len(keys)], False) for i, key in enumerate(keys)]
    sources, conditions, same = zip(*rows, strict=True)
    return pair_table(TRAIN_PAIRS, index, sources, conditions, same_image=same)


def tiny_configs(method: str = "anonygan-68", **overrides) -> tuple[ModelConfig, TrainConfig]:
    """The small profile's settings of a variant, with dotted overrides such as `train.epochs=3`."""
    mapping = params_mapping("small")
    for dotted, value in overrides.items():
        section, key = dotted.split(".")
        mapping[section][key] = value
    return config.from_mapping(mapping).variant(method)


def interrupted_at(trainer_class: type, epoch: int):
    """A `train_epoch` for `trainer_class` that stops (KeyboardInterrupt, as Ctrl-C) before epoch `epoch + 1`."""
    train_epoch = trainer_class.train_epoch

    def interrupted(self, progress):
        if self.epoch == epoch:
            raise KeyboardInterrupt
        return train_epoch(self, progress)

    return interrupted


@contextlib.contextmanager
def busy_cores():
    """Every core kept busy by a spinning process during the block: timing as on a loaded machine."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


@contextlib.contextmanager
def deadline(seconds: int):
    """Fail (TimeoutError in the main thread) instead of hanging when the block takes longer than `seconds`."""

    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# --- source code ------------------------------------------------------------------------------

def module_imports(path: Path) -> list[str]:
    """Dotted names a source file imports (`from a import b` gives `a` and `a.b`)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    return names


# --- pretrained weights -----------------------------------------------------------------------

def register_file(monkeypatch, name: str, path: Path, url: str) -> None:
    """Make PRETRAINED[name] describe the test's own file."""
    spec = weights.PretrainedFile(path.name, url, file_digest(path, "sha256"), path.stat().st_size)
    monkeypatch.setitem(weights.PRETRAINED, name, spec)


@dataclass(frozen=True)
class LegacyEntry:
    """A state-dict tensor of a legacy torch file, as its pickle describes it (data not read)."""

    storage: str
    dtype: torch.dtype
    numel: int  # of the storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


LEGACY_STORAGES = {"FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
                   "LongStorage": torch.int64, "IntStorage": torch.int32, "ByteStorage": torch.uint8,
                   "BoolStorage": torch.bool}


class _LegacyUnpickler(pickle.Unpickler):
    """Reads the state-dict pickle of a legacy (pre-zip) torch file into LegacyEntry records, resolving nothing else."""

    def find_class(self, module, name):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return lambda storage, offset, size, stride, *rest: LegacyEntry(
                storage[0], storage[1], storage[2], offset, tuple(size), tuple(stride))
        if module == "torch" and name in LEGACY_STORAGES:
            return LEGACY_STORAGES[name]
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        raise pickle.UnpicklingError(f"unexpected {module}.{name} in a state-dict pickle")

    def persistent_load(self, pid):
        kind, dtype, key, _location, numel, view = pid  # ('storage', type, key, location, numel, None)
        if kind != "storage" or view is not None:
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        return str(key), dtype, int(numel)


def read_legacy_prefix(path: Path) -> tuple[OrderedDict[str, LegacyEntry], dict[str, torch.Tensor]]:
    """The entries of a (possibly truncated) legacy torch state-dict file, and the tensors complete in it.

    Layout: pickles of the magic number, the protocol version and system info; the state-dict
    pickle; the pickled sorted list of storage keys; then per key an int64 element count and
    the raw little-endian data.
    """
    data = Path(path).read_bytes()
    stream = io.BytesIO(data)
    for _ in range(3):  # magic number, protocol version, system info
        pickle.load(stream)
    entries = _LegacyUnpickler(stream).load()
    keys = pickle.load(stream)
    storages, position = {}, stream.tell()
    dtypes = {entry.storage: (entry.dtype, entry.numel) for entry in entries.values()}
    for key in keys:
        dtype, numel = dtypes[key]
        end = position + 8 + numel * torch.empty((), dtype=dtype).element_size()
        if end > len(data):
            break
        assert struct.unpack_from("<q", data, position)[0] == numel, key
        storages[key] = torch.frombuffer(bytearray(data[position + 8:end]), dtype=dtype)
        position = end
    tensors = {name: storages[e.storage].as_strided(e.size, e.stride, e.offset).contiguous()
               for name, e in entries.items() if e.storage in storages}
    return entries, tensors


def calibrated(network: torch.nn.Module, size: int) -> torch.nn.Module:
    """Random weights with batch-norm statistics measured on random images.

    Freshly initialised running statistics shrink activations layer after layer until every
    image gives nearly the same features; measured ones keep features image-dependent.
    """
    for module in network.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the calibration batch
    network.train()
    with torch.no_grad():
        network(torch.rand(6, 3, size, size) * 2 - 1)
    return network.eval()


# --- offline Python environments ---------------------------------------------------------------

#: Top-level entries that no distribution owns alone: files installed outside site-packages (console scripts,
#: which an installer writes anew from entry_points.txt) and bytecode caches (Python writes its own).
SHARED_ENTRIES = ("..", "__pycache__")
#: dist-info files that the installer wrote, not the wheel (a wheel's WHEEL and RECORD are written anew).
INSTALLER_FILES = ("INSTALLER", "REQUESTED", "direct_url.json", "WHEEL", "RECORD")
PURE_PYTHON_WHEEL = "Wheel-Version: 1.0\nGenerator: tests.helpers\nRoot-Is-Purelib: true\nTag: py3-none-any\n"


def installed_closure(names: list[str]) -> dict[str, metadata.Distribution]:
    """The installed distributions `names` and, in turn, those they require, by canonical name. A requirement
    whose marker does not hold here (an extra, another platform) is not followed, nor one not installed here."""
    found = {canonicalize_name(name): metadata.distribution(name) for name in names}
    pending = list(found.values())
    while pending:
        for line in pending.pop().requires or ():
            requirement = Requirement(line)
            name = canonicalize_name(requirement.name)
            if name in found or (requirement.marker and not requirement.marker.evaluate({"extra": ""})):
                continue
            with contextlib.suppress(metadata.PackageNotFoundError):
                found[name] = metadata.distribution(name)
                pending.append(found[name])
    return found


def top_level_entries(distribution: metadata.Distribution) -> set[str]:
    """The first path components of the distribution's installed files: packages, modules, dist-info, .libs."""
    assert distribution.files, f"{distribution.metadata['Name']} lists no installed files"
    return {file.parts[0] for file in distribution.files} - set(SHARED_ENTRIES)


def link_distributions(distributions: list[metadata.Distribution], site_packages: Path) -> None:
    """Make the distributions importable from site_packages by symlinking their top-level entries there."""
    for distribution in distributions:
        for entry in sorted(top_level_entries(distribution)):
            (site_packages / entry).symlink_to(distribution.locate_file(entry))


def wheel_name(distribution: metadata.Distribution) -> str:
    """`name-version` as wheel file and dist-info names spell it: runs of -_. in the name become one _."""
    name = re.sub(r"[-_.]+", "_", distribution.metadata["Name"]).lower()
    return f"{name}-{Version(distribution.version)}"


def record_line(path: str, data: bytes) -> list[str]:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return [path, f"sha256={digest}", str(len(data))]


def pure_python_wheel(requirement: str, folder: Path) -> Path:
    """The wheel of the installed release that `requirement` pins, made from its installed files without the
    network: the package files, its dist-info with a WHEEL for py3-none-any and a RECORD of every file."""
    pin = Requirement(requirement)
    distribution = metadata.distribution(pin.name)
    assert pin.specifier.contains(distribution.version, prereleases=True), \
        f"{pin.name} {distribution.version} is installed here, not {pin.specifier}"
    purelib = "Root-Is-Purelib: true" in (distribution.read_text("WHEEL") or "")
    compiled = [str(file) for file in distribution.files if file.suffix in (".so", ".pyd")]
    assert purelib and not compiled, f"{pin.name} is not pure Python: {compiled}"
    base = wheel_name(distribution)
    contents: dict[str, bytes] = {}
    for file in distribution.files:
        head = file.parts[0]
        if head in SHARED_ENTRIES or "__pycache__" in file.parts:
            continue
        if head.endswith(".dist-info"):
            if file.name in INSTALLER_FILES:
                continue
            head = f"{base}.dist-info"
        contents["/".join((head, *file.parts[1:]))] = file.read_binary()
    contents[f"{base}.dist-info/WHEEL"] = PURE_PYTHON_WHEEL.encode()
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    writer.writerows(record_line(path, data) for path, data in contents.items())
    writer.writerow([f"{base}.dist-info/RECORD", "", ""])
    contents[f"{base}.dist-info/RECORD"] = record.getvalue().encode()
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{base}-py3-none-any.whl"
    # The dist-info goes last, as the wheel format recommends, and RECORD (written last) at the very end.
    last = sorted(contents, key=lambda path: path.startswith(f"{base}.dist-info/"))
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in last:
            archive.writestr(path, contents[path])
    return wheel


# --- HTTP -------------------------------------------------------------------------------------

def google_drive_page(action: str, file_id: str) -> bytes:
    """Google Drive's "can't scan this file for viruses" page: a form whose submission serves the file."""
    fields = {"id": file_id, "export": "download", "confirm": "t", "uuid": "u-1"}
    inputs = "".join(f'<input type="hidden" name="{name}" value="{value}">' for name, value in fields.items())
    return f'<html><body><form id="download-form" action="{action}" method="get">{inputs}</form></body></html>'.encode()


class FileServer:
    """Files served over HTTP on 127.0.0.1, with the failure modes downloads must survive.

    `files` maps URL paths to bytes or (content type, bytes). `cut_after[path] = n` closes
    the connection after n bytes on the next request for that path; `fail_next[path] = k`
    answers the next k requests with 503; paths in `without_length` are sent without a
    Content-Length (the body ends where the connection closes). Every request's path and Range
    header is logged.
    """

    def __init__(self):
        import http.server
        import threading

        self.files: dict[str, bytes | tuple[str, bytes]] = {}
        self.cut_after: dict[str, int] = {}
        self.fail_next: dict[str, int] = {}
        self.without_length: set[str] = set()
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                path = self.path.split("?", 1)[0]
                server.requests.append((self.path, self.headers.get("Range")))
                if server.fail_next.get(path, 0) > 0:
                    server.fail_next[path] -= 1
                    self.send_error(503)
                    return
                entry = server.files.get(path)
                if entry is None:
                    self.send_error(404)
                    return
                content_type, body = entry if isinstance(entry, tuple) else ("application/octet-stream", entry)
                start = 0
                if self.headers.get("Range", "").startswith("bytes="):
                    start = int(self.headers["Range"][6:].split("-")[0])
                    if start >= len(body):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Type", content_type)
                if path not in server.without_length:
                    self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                payload = body[start:]
                cut = server.cut_after.pop(path, None)
                if cut is not None:
                    self.wfile.write(payload[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(payload)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._server.server_port}{path}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
