"""Other projects' released weights: read without running their pickled code, map onto our networks.

Reading. A PyTorch checkpoint is a pickle, and `torch.load(weights_only=False)` calls whatever the
pickle names. `read_weights` unpickles with an `Unpickler` whose `find_class` hands out only
torch's tensor-rebuild functions and `OrderedDict`; every other global the file names becomes an
inert stand-in class that records what pickle does with it and runs nothing. So a PyTorch
Lightning `.ckpt` (whose `callbacks` entry, up to Lightning 1.4, is keyed by the class object
`pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint`) reads without pytorch_lightning
installed, a pickled `os.system` call is never made, and only the state dict is kept. torch's own
`weights_only=True` loader refuses such a file ("Unsupported global: ...ModelCheckpoint").

Mapping. Our networks register their tensors in the authors' order, so a state dict maps by
position: `map_by_position` pairs the tensors in order, checks each pair (same leaf name, so
the same kind of entry, e.g. `running_var`; same dtype; same shape) and names the first pair
that differs before anything is loaded.

Kinds. `torch.load` hands a zip archive holding `constants.pkl` (TorchScript) to `torch.jit.load`,
which ignores `pickle_module` and runs the archive's code. So every file is classified first
(`weights_kind`: a legacy pickle, a torch zip with `data.pkl`, TorchScript, anything else) and
only the two pickle kinds reach the restricted reader; the others are refused in one line.

Status. The `download-released@<method>` stage records what it fetched, with its SHA-256, in
`models/<method>/status.json` (`infra.records.ReleaseStatus`); anonymisers find the file through
`released_file`, which says why a method is not available when the download could not be made
and re-checks the recorded digest before the file is read.
"""

from __future__ import annotations

import collections
import pickle
import types
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from infra.errors import DataError, MissingInputError, NotAvailableError
from infra.fetch import ChecksumError, file_digest
from infra.records import STATUS, ReleaseStatus

#: The only globals a file may bring to life. Storage classes never get this far: torch.load's own
#: unpickler turns every "...Storage" name into an inert storage type first.
_TRUSTED = {
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
}
#: Training metadata a Lightning checkpoint carries at its top level, kept for the record.
_LIGHTNING_INFO = ("epoch", "global_step", "pytorch-lightning_version")


class CheckpointError(DataError):
    """A file that cannot be read as the expected weights; the message names it."""


class LayoutMismatch(DataError):
    """The authors' tensors and ours do not pair up; the message names the first pair that differs."""


class _StandInType(type):
    def __repr__(cls) -> str:
        return f"<stand-in for {cls.stands_for}>"


class StandIn(metaclass=_StandInType):
    """What an untrusted global becomes. Calling it, building it or filling it only records the
    arguments; as a class (e.g. a dict key) it is an ordinary hashable object."""

    stands_for = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> StandIn:
        self = object.__new__(cls)
        self.__dict__.update(args=args, kwargs=kwargs, state=None, items=[])
        return self

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.__dict__["state"] = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items.append((key, value))

    def append(self, item: Any) -> None:
        self.items.append(item)

    def extend(self, items: Any) -> None:
        self.items.extend(items)


_STAND_INS: dict[str, type] = {}


def stand_in(module: str, name: str) -> type:
    """The stand-in class of `module.name`: the same global always gets the same class."""
    full = f"{module}.{name}"
    if full not in _STAND_INS:
        short = name.rsplit(".", 1)[-1]
        _STAND_INS[full] = _StandInType(short if short.isidentifier() else "StandIn", (StandIn,),
                                        {"stands_for": full, "__module__": __name__})
    return _STAND_INS[full]


def _restricted_pickle(replaced: set[str]) -> types.ModuleType:
    """A `pickle_module` for torch.load whose unpickler resolves globals to trusted objects or stand-ins."""

    class RestrictedUnpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            trusted = _TRUSTED.get((module, name))
            if trusted is not None:
                return trusted
            replaced.add(f"{module}.{name}")
            return stand_in(module, name)

    module = types.ModuleType("restricted_pickle")
    module.Unpickler = RestrictedUnpickler
    module.load = lambda file, **kwargs: RestrictedUnpickler(file, **kwargs).load()
    module.UnpicklingError = pickle.UnpicklingError
    return module


@dataclass(frozen=True)
class Weights:
    """What `read_weights` keeps of a file: its state dict and a summary of the rest."""

    path: Path
    state_dict: OrderedDict[str, Tensor]
    lightning: bool  # a Lightning checkpoint: the state dict was its "state_dict" entry
    info: dict[str, Any]  # epoch, global_step and Lightning version, where the file has them
    stand_ins: tuple[str, ...]  # the globals that became inert stand-ins

    def describe(self) -> str:
        kind = "a PyTorch Lightning checkpoint" if self.lightning else "a state dict"
        details = [f"{len(self.state_dict)} tensors", *(f"{key} {value}" for key, value in self.info.items())]
        if self.stand_ins:
            details.append(f"not run: {', '.join(self.stand_ins)}")
        return f"{self.path.name}: {kind} ({'; '.join(details)})"


#: What `weights_kind` calls each kind of file; only the first two are read.
LEGACY_PICKLE, TORCH_ZIP, TORCHSCRIPT, OTHER = "a legacy PyTorch pickle", "a PyTorch zip archive", \
    "a TorchScript archive", "not a PyTorch file"
PICKLE_KINDS = (LEGACY_PICKLE, TORCH_ZIP)
#: The first byte of a pickle of protocol 2 or later: how legacy `torch.save` files begin.
_PICKLE_PROTOCOL = 0x80


def weights_kind(path: Path) -> str:
    """Which kind of file `path` is, judged from its bytes alone (nothing in it is unpickled)."""
    if not path.is_file():
        raise MissingInputError(f"{path} not found")
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):
            return OTHER
        # torch.load's own test for TorchScript (torch.serialization._is_torchscript_zip), plus its code folder.
        if any(name.rsplit("/", 1)[-1] == "constants.pkl" or "/code/" in name for name in names):
            return TORCHSCRIPT
        return TORCH_ZIP if any(name.rsplit("/", 1)[-1] == "data.pkl" for name in names) else OTHER
    with open(path, "rb") as handle:
        first = handle.read(1)
    return LEGACY_PICKLE if first and first[0] == _PICKLE_PROTOCOL else OTHER


def require_pickle_kind(path: Path) -> None:
    """A CheckpointError unless `path` is one of the pickle kinds (checked before any loader opens it)."""
    kind = weights_kind(path)
    if kind == TORCHSCRIPT:
        raise CheckpointError(f"{path} is {kind}: loading it would run the code it carries, so it is refused; "
                              "it is not the authors' checkpoint")
    if kind not in PICKLE_KINDS:
        raise CheckpointError(f"{path} ({path.stat().st_size:,} bytes) is not a readable PyTorch file: it is "
                              "probably truncated or corrupt (neither a pickle nor a zip archive with data.pkl)")


def read_weights(path: Path) -> Weights:
    """The state dict of a Lightning checkpoint or of a plain state-dict file, read without running its code.

    Everything else in the file (optimiser states, callbacks, ...) is dropped. A TorchScript archive, a
    truncated or corrupt file, or one holding no state dict of finite tensors, is a CheckpointError naming it.
    """
    require_pickle_kind(path)
    replaced: set[str] = set()
    try:
        loaded = torch.load(path, map_location="cpu", pickle_module=_restricted_pickle(replaced), weights_only=False)
    except Exception as error:  # torch raises many types for truncated or foreign files
        raise CheckpointError(f"{path} ({path.stat().st_size:,} bytes) is not a readable PyTorch file: it is "
                              f"probably truncated or corrupt ({type(error).__name__}: {error})") from error
    if not isinstance(loaded, Mapping):
        raise CheckpointError(f"{path} holds a {type(loaded).__name__}, not a checkpoint or state dict")
    lightning = isinstance(loaded.get("state_dict"), Mapping)
    state = loaded["state_dict"] if lightning else loaded
    kept: OrderedDict[str, Tensor] = OrderedDict()
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            keys = ", ".join(map(str, list(loaded)[:8]))
            raise CheckpointError(f"{path}: entry {key!r} ({type(value).__name__}) is not a tensor: neither a "
                                  f"Lightning checkpoint nor a state dict (top-level keys: {keys})")
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise CheckpointError(f"{path}: {key} {list(value.shape)} holds NaN or infinite values "
                                  "(a corrupt file or a diverged training run)")
        kept[key] = value.detach()
    info = {key: loaded[key] for key in _LIGHTNING_INFO if isinstance(loaded.get(key), int | str)}
    return Weights(path, kept, lightning, info, tuple(sorted(replaced)))


def _describe(key: str, tensor: Tensor) -> str:
    return f"{key} {list(tensor.shape)} {str(tensor.dtype).removeprefix('torch.')}"


def _leaf(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def map_by_position(theirs: Mapping[str, Tensor], module: nn.Module, what: str,
                    transforms: Mapping[str, Callable[[Tensor], Tensor]] | None = None) -> OrderedDict[str, Tensor]:
    """`module`'s state dict holding the authors' tensors, paired in order and checked pair by pair.

    `transforms` converts an authors' tensor (by their key) into our layout before its shape is
    checked. Raises LayoutMismatch naming the first pair that differs, or the first extra entry.
    """
    transforms = transforms or {}
    ours = list(module.state_dict().items())
    mapped: OrderedDict[str, Tensor] = OrderedDict()
    for position, ((their_key, value), (our_key, reference)) in enumerate(zip(theirs.items(), ours, strict=False)):
        where = (f"{what}, position {position}: the authors' {_describe(their_key, value)} vs our "
                 f"{_describe(our_key, reference)}")
        if _leaf(their_key) != _leaf(our_key):
            raise LayoutMismatch(f"{where}: different entries")
        if value.dtype != reference.dtype:
            raise LayoutMismatch(f"{where}: different dtypes")
        if their_key in transforms:
            value = transforms[their_key](value)
        if value.shape != reference.shape:
            raise LayoutMismatch(f"{where}: different shapes" + (" after conversion" if their_key in transforms
                                                                 else ""))
        mapped[our_key] = value
    if len(theirs) != len(ours):
        common = len(mapped)
        extra = (f"the authors' {_describe(*list(theirs.items())[common])}" if len(theirs) > len(ours)
                 else f"our {_describe(*ours[common])}")
        raise LayoutMismatch(f"{what}: the authors' file has {len(theirs)} tensors, our network {len(ours)}; the "
                             f"first {common} pair up, the first unpaired one is {extra}")
    return mapped


def released_file(folder: Path, model: str, method: str) -> tuple[Path, ReleaseStatus]:
    """The file `download-released@<method>` fetched into `folder` (the `model` authors' release) and its status.

    NotAvailableError (with the stage's reason) when the download could not be made; a ChecksumError naming
    both digests when the file no longer has the SHA-256 recorded at download.
    """
    status = ReleaseStatus.read(folder)
    if status is None:
        raise MissingInputError(f"{folder / STATUS} not found: run `dvc repro download-released@{method}` first")
    if status.model != model:
        raise DataError(f"{folder / STATUS} describes the {status.model} release, but {method} loads the "
                        f"{model} one: set released.{method}.model to {model}")
    if not status.available:
        raise NotAvailableError(f"the authors' weights are not available: {status.reason}")
    path = folder / status.file
    if not path.is_file():
        raise MissingInputError(f"{path} not found: run `dvc repro --force download-released@{method}`")
    digest = file_digest(path, "sha256")
    if digest != status.sha256:
        raise ChecksumError(f"{path} has SHA-256 {digest}, but download-released@{method} recorded "
                            f"{status.sha256} in {folder / STATUS}: the file changed since it was checked. "
                            f"Run `dvc repro --force download-released@{method}` to check it again")
    return path, status
