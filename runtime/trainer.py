"""The training loop's contract: checkpoints, resume, finiteness checks and DVCLive around a trainer's epochs.

`EpochTrainer` is the contract both trainers (AnonyGAN, CIAGAN) follow: an epoch is a fixed
number of steps whose batches depend only on (seed, epoch); a checkpoint every `checkpoint_every`
epochs holds networks, optimisers and the global RNG state, written atomically; a re-run resumes
from it when it was written with the same settings and then continues exactly as an uninterrupted
run would (on CPU); a checkpoint of other settings is never overwritten (it is set aside, or, with
`resume: continue`, continued with new learning rates or precision); a non-finite loss stops the
run naming the loss, epoch and step; losses per epoch and sample grids go to DVCLive.

Several processes (a `torchrun` launch) share one run: `process_group` joins them, gradients are
summed over them (`sum_gradients`), only the first process writes checkpoints and logs.
"""

from __future__ import annotations

import itertools
import math
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm import tqdm

from infra.atomic import atomic_path
from infra.errors import ParamsError, SuiteError
from infra.pool import WorkerDiedError
from runtime.checkpoints import comparable, load_checkpoint
from runtime.distributed import barrier, world


class NonFiniteLossError(SuiteError, RuntimeError):
    """A loss became NaN or infinite; the last checkpoint on disk is still the last good state."""


class EpochTrainer(ABC):
    """Checkpointing, resuming, finiteness checks and logging around a subclass's epochs.

    A subclass sets `kind`, `format_version`, `settings_name`, `checkpoint`, `live_dir`, `epochs`,
    `checkpoint_every`, `sample_every`, `steps_per_epoch` and `resume_rule`, and implements the
    abstract methods. In a run of several processes every process trains; the first one writes
    checkpoints and logs.
    """

    kind: str
    format_version: int
    settings_name: str  # where the settings are in params.yaml ("train", "ciagan.train"), for messages
    checkpoint: Path
    live_dir: Path | None
    epoch: int = 0  # finished epochs
    saved_epoch: int | None = None  # the finished epochs the checkpoint on disk holds, once known
    continued: list[dict[str, Any]]  # every `resume: continue` with changed settings: epoch and changes

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

    @property
    @abstractmethod
    def resume_rule(self) -> str:
        """same_settings: a checkpoint of other settings is set aside | continue: it is continued (see `resume`)."""

    @abstractmethod
    def settings(self) -> dict[str, dict[str, Any]]:
        """The configurations a checkpoint must match to be resumed, as plain dicts (see `resume_ignores`)."""

    #: Per settings group, the keys that do not change what is computed (workers, logging cadence).
    resume_ignores: dict[str, set[str]] = {}
    #: Per settings group, the keys `resume: continue` may change (learning rates, precision).
    resume_changeable: dict[str, set[str]] = {}

    @abstractmethod
    def train_epoch(self, progress: tqdm) -> dict[str, float]:
        """Run epoch `self.epoch + 1` (calling `check_finite` per step); returns the mean of each loss."""

    @abstractmethod
    def modules(self) -> dict[str, Any]:
        """Everything with a state_dict to checkpoint: networks and optimisers, by name."""

    @abstractmethod
    def sample_grid(self) -> Image.Image:
        """A grid of fixed samples, for DVCLive."""

    @abstractmethod
    def restore_settings(self) -> None:
        """After a checkpoint is continued with other settings: re-apply what its optimiser states override."""

    @property
    def rank(self) -> int:
        return world()[0]

    @property
    def world_size(self) -> int:
        """The number of processes sharing this run (1 without torchrun)."""
        return world()[1]

    # -- the run ------------------------------------------------------------------------------

    def fit(self) -> None:
        """Train to `epochs`, resuming from the checkpoint when it belongs to these settings."""
        resumed = self.resume()
        main = self.rank == 0
        live = self._live(resumed) if main else None
        progress = tqdm(total=self.epochs * self.steps_per_epoch, initial=self.epoch * self.steps_per_epoch,
                        unit="step", desc=f"train {self.checkpoint.parent.name}", dynamic_ncols=True,
                        disable=None if main else True)
        try:
            while self.epoch < self.epochs:
                means = self._train_epoch_reporting_dead_workers(progress)
                self.epoch += 1
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
        """Stop with the loss, epoch and step named when a loss is NaN or infinite, saying how to go on."""
        for name, value in losses.items():
            if not math.isfinite(value):
                raise NonFiniteLossError(f"{name} = {value} at epoch {self.epoch + 1}, step {step}: training "
                                         f"stopped. {self._how_to_go_on()}")

    def _how_to_go_on(self) -> str:
        section = self.settings_name
        if self.saved_epoch is None:
            return (f"No checkpoint was written yet: lower the learning rates or set {section}.precision: fp32, "
                    "then re-run")
        return (f"{self.checkpoint} still holds the last good state (epoch {self.saved_epoch}); to go on from it, "
                f"lower the learning rates or set {section}.precision: fp32, and set {section}.resume: continue")

    def _say(self, message: str) -> None:
        if self.rank == 0:
            tqdm.write(message)

    # -- checkpoints --------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {"format": self.format_version, "kind": self.kind, **self.settings(), "epoch": self.epoch,
                "continued": self.continued,
                "modules": {name: module.state_dict() for name, module in self.modules().items()}, "rng": rng}

    def save(self) -> None:
        """Write the checkpoint atomically (first process only): a crash mid-write leaves the previous one intact."""
        if self.rank == 0:
            with atomic_path(self.checkpoint) as tmp:
                torch.save(self.state_dict(), tmp)
        self.saved_epoch = self.epoch

    def resume(self) -> bool:
        """Load the checkpoint if it exists and was written with these settings.

        A checkpoint of other settings is never overwritten. With `resume_rule` same_settings it is
        renamed to `<name>.epoch-<epochs>.pt` beside it and training starts from scratch; with
        continue it is loaded when only `resume_changeable` settings differ (a ParamsError names any
        other), and the change is recorded in the checkpoint's `continued` list.
        """
        self.continued = []
        if not self.checkpoint.is_file():
            return False
        state = load_checkpoint(self.checkpoint, self.kind, self.format_version)
        changes = self._changes(state)
        if changes and self.resume_rule != "continue":
            self._set_aside(state["epoch"], changes)
            return False
        fixed = [change for change in changes if change[1] not in self.resume_changeable.get(change[0], set())]
        if fixed:
            changeable = sorted(set().union(*self.resume_changeable.values()))
            raise ParamsError(f"{self.settings_name}.resume: continue may change only {', '.join(changeable)}, but "
                              f"{self.checkpoint} was trained with other {_described(fixed)}: restore them, or set "
                              f"{self.settings_name}.resume: same_settings to train from scratch (the checkpoint "
                              "is kept beside it)")
        for name, module in self.modules().items():
            module.load_state_dict(state["modules"][name])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self.epoch = self.saved_epoch = state["epoch"]
        self.continued = list(state.get("continued", []))
        if changes:
            self.continued.append({"epoch": self.epoch,
                                   "changes": {key: [old, new] for _, key, old, new in changes}})
            self.restore_settings()
            self._say(f"continuing {self.checkpoint} after epoch {self.epoch} with {_described(changes)}")
        else:
            self._say(f"resuming {self.checkpoint} after epoch {self.epoch}")
        return True

    def _changes(self, state: dict[str, Any]) -> list[tuple[str, str, Any, Any]]:
        """(group, key, checkpoint's value, current value) for every setting that differs and matters."""
        changes = []
        for group, current in self.settings().items():
            ignored = self.resume_ignores.get(group, set())
            saved, now = comparable(state.get(group, {}), ignored), comparable(current, ignored)
            changes += [(group, key, saved.get(key), now.get(key))
                        for key in sorted(saved.keys() | now.keys()) if saved.get(key) != now.get(key)]
        return changes

    def _set_aside(self, epochs: int, changes: list[tuple[str, str, Any, Any]]) -> None:
        stem, suffix = self.checkpoint.stem, self.checkpoint.suffix
        for number in itertools.count(1):
            kept = self.checkpoint.with_name(f"{stem}.epoch-{epochs:04d}{'' if number == 1 else f'-{number}'}{suffix}")
            if not kept.exists():
                break
        barrier()  # every process has read the checkpoint before it moves
        if self.rank == 0:
            os.replace(self.checkpoint, kept)
        self._say(f"{self.checkpoint} holds {epochs} epoch(s) trained with other {_described(changes)}: kept as "
                  f"{kept.name}, training from scratch (set {self.settings_name}.resume: continue to go on from it "
                  "with new learning rates or precision)")

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


def _described(changes: list[tuple[str, str, Any, Any]]) -> str:
    return "settings: " + ", ".join(f"{key} {old!r} -> {new!r}" for _, key, old, new in changes)
