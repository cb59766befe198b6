"""Weight files are classified before anything in them is unpickled; a TorchScript archive never runs.

The hostile archive is built here: a scripted module whose `__setstate__` prints a marker, which
`torch.load` runs (shown first, so the test proves the file is hostile) and `read_weights` must not.
"""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch

from infra.errors import DataError
from infra.fetch import ChecksumError, file_digest
from infra.records import ReleaseStatus
from infra.weight_files import (
    LEGACY_PICKLE,
    OTHER,
    TORCH_ZIP,
    TORCHSCRIPT,
    CheckpointError,
    read_weights,
    released_file,
    weights_kind,
)
from runtime import load_checkpoint

MARKER = "HOSTILE-SETSTATE-RAN"


class Hostile(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight

    @torch.jit.export
    def __getstate__(self) -> tuple[torch.Tensor, bool]:
        return (self.weight, self.training)

    @torch.jit.export
    def __setstate__(self, state: tuple[torch.Tensor, bool]) -> None:
        print("HOSTILE-SETSTATE-RAN")  # what TorchScript may do when the archive is read (MARKER)
        self.weight = state[0]
        self.training = state[1]


@pytest.fixture()
def torchscript_file(tmp_path):
    path = tmp_path / "anonygan.ckpt"
    torch.jit.script(Hostile()).save(str(path))
    return path


def test_a_torchscript_archive_is_refused_before_its_code_runs(torchscript_file, capfd):
    with pytest.warns(UserWarning):  # torch.load says it dispatches to torch.jit.load ...
        torch.load(torchscript_file, weights_only=False)
    assert MARKER in capfd.readouterr().out  # ... and the archive's code runs there
    assert weights_kind(torchscript_file) == TORCHSCRIPT
    with pytest.raises(CheckpointError, match=r"anonygan.ckpt is a TorchScript archive: loading it would run"):
        read_weights(torchscript_file)
    assert MARKER not in capfd.readouterr().out


def test_pickle_kinds_are_read_and_other_files_refused(tmp_path):
    state = OrderedDict(weight=torch.arange(4.0))
    zipped, legacy, other = tmp_path / "zip.pth", tmp_path / "legacy.pth", tmp_path / "other.pth"
    torch.save(state, zipped)
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    other.write_bytes(b"GIF89a not weights")
    assert [weights_kind(path) for path in (zipped, legacy, other)] == [TORCH_ZIP, LEGACY_PICKLE, OTHER]
    for path in (zipped, legacy):
        assert torch.equal(read_weights(path).state_dict["weight"], state["weight"])
    with pytest.raises(CheckpointError, match=r"other.pth \(18 bytes\) is not a readable PyTorch file"):
        read_weights(other)


def test_the_digest_recorded_at_download_is_checked_at_every_load(tmp_path):
    path = tmp_path / "modelG.pth"
    torch.save(OrderedDict(weight=torch.zeros(3)), path)
    recorded = file_digest(path, "sha256")
    ReleaseStatus(method="ciagan-released", model="ciagan", file=path.name, url="http://127.0.0.1:9/modelG.pth",
                  available=True, sha256=recorded).write(tmp_path)
    assert released_file(tmp_path, "ciagan", "ciagan-released")[0] == path
    torch.save(OrderedDict(weight=torch.ones(3)), path)  # replaced by hand after the download
    now = file_digest(path, "sha256")
    with pytest.raises(ChecksumError, match=f"has SHA-256 {now}, but download-released@ciagan-released recorded "
                                            f"{recorded}"):
        released_file(tmp_path, "ciagan", "ciagan-released")


def test_a_torchscript_training_checkpoint_is_refused_in_one_line(torchscript_file, capfd):
    with pytest.raises(DataError, match="is not a readable anonygan checkpoint: it is a TorchScript archive"):
        load_checkpoint(torchscript_file, "anonygan", 1)
    assert MARKER not in capfd.readouterr().out
