"""Shared fixtures. Real-data tests read ../shared/data; in CI (CI=true) its absence is a failure."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ANONYGAN_SHARED_DATA", REPO.parent / "shared" / "data"))
#: Prepared minis are cached here between test runs; rows are keyed by photo bytes and settings.
PREPARED_CACHE = REPO / ".cache" / "test-prepared"


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
def lfw_root(shared_data) -> Path:
    return _require(shared_data / "lfw")


def repository_copy(destination: Path) -> Path:
    """A fresh git repository holding the project's tracked and unignored files, committed once."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, destination / name)
    identity = ["-c", "user.name=tests", "-c", "user.email=tests@localhost"]
    for command in (["init", "-q"], ["add", "-A"], [*identity, "commit", "-q", "-m", "copy"]):
        subprocess.run(["git", *command], cwd=destination, check=True, capture_output=True)
    return destination


def dvc(workdir: Path, *args: str) -> str:
    """Run dvc in `workdir`; a failure shows its whole output."""
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    result = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=workdir, capture_output=True, text=True, env=environment
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def default_params(**roots: Path) -> dict:
    """params.yaml with the given dataset roots (celeba=..., lfw=...)."""
    from pipelines.params import load

    params = load(REPO / "params.yaml")
    for dataset, root in roots.items():
        params["data"][dataset]["root"] = str(root)
    return params


def _prepare(name: str, dataset: str, root: Path, **data_overrides) -> Path:
    """Run the download (verify) and prepare stages on a local copy; returns data/prepared/<dataset>."""
    from pipelines import download, prepare

    params = default_params(**{dataset: root})
    params["data"][dataset].update(data_overrides)
    work = PREPARED_CACHE / name
    raw, prepared = work / "raw", work / "prepared"
    download.RAW = raw  # the stage writes data/raw/<dataset>/source.json under RAW
    try:
        download.run(dataset, params)
    finally:
        download.RAW = Path("data/raw")
    prepare.run(dataset, params, raw=raw, out_root=prepared)
    return prepared / dataset


@pytest.fixture(scope="session")
def prepared_celeba(celeba_aligned_root) -> Path:
    """Prepared aligned CelebA mini (150 photos of 5 identities)."""
    return _prepare("celeba-aligned", "celeba", celeba_aligned_root)


@pytest.fixture(scope="session")
def prepared_celeba_wild(celeba_wild_root) -> Path:
    """Prepared in-the-wild CelebA mini (600 photos of 20 identities)."""
    return _prepare("celeba-wild", "celeba", celeba_wild_root, variant="wild")


@pytest.fixture(scope="session")
def prepared_lfw(lfw_root) -> Path:
    """Prepared LFW deep-funneled: every image pairs.txt names (7,701 photos)."""
    return _prepare("lfw", "lfw", lfw_root)


class FileServer:
    """Files served over HTTP on 127.0.0.1, with the failure modes downloads must survive.

    `files` maps URL paths to bytes or (content type, bytes). `cut_after[path] = n` closes
    the connection after n bytes on the next request for that path; `fail_next[path] = k`
    answers the next k requests with 503. Every request's path and Range header is logged.
    """

    def __init__(self):
        import http.server
        import threading

        self.files: dict[str, bytes | tuple[str, bytes]] = {}
        self.cut_after: dict[str, int] = {}
        self.fail_next: dict[str, int] = {}
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


@pytest.fixture
def file_server():
    server = FileServer()
    yield server
    server.close()
