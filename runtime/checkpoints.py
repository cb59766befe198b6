"""Reading the suite's own training checkpoints back, and comparing the settings they were written with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from infra.errors import DataError
from infra.weight_files import PICKLE_KINDS, weights_kind


def load_checkpoint(path: Path, kind: str, format_version: int) -> dict[str, Any]:
    """A checkpoint dict written by `EpochTrainer.save`, on CPU; a DataError naming the file otherwise.

    Memory-mapped: inference reads only the tensors it needs, not the optimiser states.
    """
    file_kind = weights_kind(path)  # a TorchScript archive is refused before torch sees it
    if file_kind not in PICKLE_KINDS:
        raise DataError(f"{path} is not a readable {kind} checkpoint: it is {file_kind}; delete it and re-run its "
                        "train stage")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # torch raises many types for truncated, corrupt or foreign files
        raise DataError(f"{path} is not a readable {kind} checkpoint ({type(error).__name__}: {error}); "
                        "delete it and re-run its train stage") from error
    if not isinstance(state, dict) or state.get("format") != format_version or state.get("kind") != kind:
        raise DataError(f"{path} is not a {kind} checkpoint (format {format_version}); "
                        "delete it and re-run its train stage")
    return state


def comparable(settings: dict[str, Any], ignored: set[str] = frozenset()) -> dict[str, Any]:
    """Settings without the `ignored` keys, tuples as lists (as they come back from a checkpoint)."""
    return {key: comparable(value) if isinstance(value, dict)
            else list(value) if isinstance(value, tuple) else value
            for key, value in settings.items() if key not in ignored}
