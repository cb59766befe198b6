"""The torch runtime shared by trainers, inference and metrics: device, precision, updates, checkpoints.

`EpochTrainer` is the contract both trainers (AnonyGAN, CIAGAN) follow: an epoch is a fixed
number of steps whose batches depend only on (seed, epoch); a checkpoint every `checkpoint_every`
epochs holds networks, optimisers, schedulers and the global RNG state, written atomically; a
re-run resumes from it when it was written with the same settings and then continues exactly as
an uninterrupted run would (on CPU); a non-finite loss stops the run naming the loss, epoch and
step; losses per epoch and sample grids go to DVCLive.
"""

from __future__ import annotations

import contextlib
import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm import tqdm

from facedata.atomic import atomic_path
from facedata.errors import DataError, SuiteError
from facedata.pool import WorkerDiedError

PRECISIONS = ("fp32", "bf16")


class NonFiniteLossError(SuiteError, RuntimeError):
    """A loss became NaN or infinite; the last checkpoint on disk is still the last good state."""


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def memory_format(device: torch.device) -> torch.memory_format:
    """Channels-last on CUDA (tensor cores), contiguous on CPU."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when `precision` is bf16; fp32 (no autocast) otherwise and on CPU."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}; got {precision!r}")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda" and precision == "bf16")


def update(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One optimiser step on `loss`: clear gradients, backpropagate, step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def load_checkpoint(path: Path, kind: str, format_version: int) -> dict[str, Any]:
    """A checkpoint dict written by `EpochTrainer.save`, on CPU; a DataError naming the file otherwise.

    Memory-mapped: inference reads only the tensors it needs, not the optimiser states.
    """
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


class EpochTrainer(ABC):
    """Checkpointing, resuming, finiteness checks and logging around a subclass's epochs.

    A subclass sets `kind`, `format_version`, `checkpoint`, `live_dir`, `epochs`,
    `checkpoint_every`, `sample_every` and `steps_per_epoch`, and implements the abstract methods.
    """

    kind: str
    format_version: int
    checkpoint: Path
    live_dir: Path | None
    epoch: int = 0  # finished epochs

    @property
    @abstractmethod
    def epochs(self) -> int: ...

    @property
    @abstractmethod
    def checkpoint_every(self) -> int: ...

    @property
    @abstractmethod
    def sample_every(self) -> int: ...

    @property
    @abstractmethod
    def steps_per_epoch(self) -> int: ...

    @abstractmethod
    def settings(self) -> dict[str, dict[str, Any]]:
        """The configurations a checkpoint must match to be resumed, as plain dicts (see `resume_ignores`)."""

    #: Per settings group, the keys that do not change what is computed (workers, logging cadence).
    resume_ignores: dict[str, set[str]] = {}

    @abstractmethod
    def train_epoch(self, progress: tqdm) -> dict[str, float]:
        """Run epoch `self.epoch + 1` (calling `check_finite` per step); returns the mean of each loss."""

    @abstractmethod
    def end_epoch(self) -> None:
        """Called after each epoch (learning-rate schedules)."""

    @abstractmethod
    def modules(self) -> dict[str, Any]:
        """Everything with a state_dict to checkpoint: networks, optimisers, schedulers, by name."""

    @abstractmethod
    def sample_grid(self) -> Image.Image:
        """A grid of fixed samples, for DVCLive."""

    # -- the run ------------------------------------------------------------------------------

    def fit(self) -> None:
        """Train to `epochs`, resuming from the checkpoint when it belongs to these settings."""
        resumed = self.resume()
        live = self._live(resumed)
        progress = tqdm(total=self.epochs * self.steps_per_epoch, initial=self.epoch * self.steps_per_epoch,
                        unit="step", desc=f"train {self.checkpoint.parent.name}", dynamic_ncols=True, disable=None)
        try:
            while self.epoch < self.epochs:
                means = self._train_epoch_reporting_dead_workers(progress)
                self.epoch += 1
                self.end_epoch()
                if live is not None:
                    self._log(live, means)
                if self.epoch % self.checkpoint_every == 0 or self.epoch == self.epochs:
                    self.save()
        finally:
            progress.close()
            if live is not None:
                live.end()

    def _train_epoch_reporting_dead_workers(self, progress: tqdm) -> dict[str, float]:
        """`train_epoch`; a data loader worker that dies (e.g. the out-of-memory killer) is one WorkerDiedError.

        torch notices the death at once and raises a RuntimeError naming the worker; the stage turns
        this error into one line instead of a traceback.
        """
        try:
            return self.train_epoch(progress)
        except RuntimeError as error:
            if "DataLoader worker" not in str(error):
                raise
            raise WorkerDiedError(
                f"a data loader worker process ended abruptly (killed, e.g. by the out-of-memory killer) in epoch "
                f"{self.epoch + 1} ({error}); {self.checkpoint} holds the last checkpoint: re-run to resume "
                "(fewer data loader workers need less memory)") from None

    def check_finite(self, losses: dict[str, float], step: int) -> None:
        """Stop with the loss, epoch and step named when a loss is NaN or infinite."""
        for name, value in losses.items():
            if not math.isfinite(value):
                raise NonFiniteLossError(
                    f"{name} = {value} at epoch {self.epoch + 1}, step {step}: training stopped; "
                    f"{self.checkpoint} still holds the last good state (lower the learning rates "
                    "or train in fp32)")

    # -- checkpoints --------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {"format": self.format_version, "kind": self.kind, **self.settings(), "epoch": self.epoch,
                "modules": {name: module.state_dict() for name, module in self.modules().items()}, "rng": rng}

    def save(self) -> None:
        """Write the checkpoint atomically: a crash mid-write leaves the previous one intact."""
        with atomic_path(self.checkpoint) as tmp:
            torch.save(self.state_dict(), tmp)

    def resume(self) -> bool:
        """Load the checkpoint if it exists and was written with these settings."""
        if not self.checkpoint.is_file():
            return False
        state = load_checkpoint(self.checkpoint, self.kind, self.format_version)
        for group, current in self.settings().items():
            ignored = self.resume_ignores.get(group, set())
            if comparable(state.get(group, {}), ignored) != comparable(current, ignored):
                tqdm.write(f"{self.checkpoint} was trained with other settings: starting from scratch")
                return False
        for name, module in self.modules().items():
            module.load_state_dict(state["modules"][name])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.epoch = state["epoch"]
        tqdm.write(f"resuming {self.checkpoint} after epoch {self.epoch}")
        return True

    # -- logging ------------------------------------------------------------------------------

    def _live(self, resumed: bool):
        if self.live_dir is None:
            return None
        from dvclive import Live

        return Live(str(self.live_dir), resume=resumed, save_dvc_exp=False, dvcyaml=None)

    def _log(self, live, means: dict[str, float]) -> None:
        # Step = finished epochs, also after a resume, which re-logs the epochs since the checkpoint.
        live.step = self.epoch
        for name, value in means.items():
            live.log_metric(f"train/{name}", value)
        if self.epoch % self.sample_every == 0 or self.epoch == self.epochs:
            live.log_image(f"samples/epoch-{self.epoch:04d}.png", self.sample_grid())
        live.next_step()
