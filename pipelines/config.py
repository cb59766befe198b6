"""params.yaml, read once into typed sections: the one configuration every stage receives.

Each section is the settings class of the package that uses it (`facedata.crops.PrepareConfig`,
`anonygan.model.ModelConfig`, `baselines.classic.BlurConfig`, a metric's options, ...), loaded by
the generic `infra.settings.load`, so every bad value or unknown key is a `ParamsError` naming
its dotted key. The whole file is checked when it is loaded: a stage never starts on settings
that another stage would reject later.

Sections whose keys are names (variants, anonymisers, metrics, methods) are checked against what
they name: a variant overrides `model` and `train` settings, an `anonymisers` entry is a
registered anonymiser's settings, a `metrics` entry a registered metric's options.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml

import metrics
from anonygan.model import ModelConfig, crop_size_problem
from anonygan.training import TrainConfig
from baselines import anonymiser_class, available
from baselines.ciagan import CiaganConfig, TrainingConfig
from facedata.crops import PrepareConfig
from facedata.datasets import DataConfig
from facedata.protocol import PairsConfig
from infra import settings as config
from infra.errors import ParamsError
from infra.fetch import DownloadConfig
from infra.settings import Check, FieldError, at_least, slug

#: Names that become folder names (outputs/<dataset>/<method>, models/<method>): checked as plain names.
Name = Annotated[str, slug]


@dataclass(frozen=True)
class CiaganSettings:
    """CIAGAN's architecture and training run (`train-ciagan`)."""

    model: CiaganConfig = field(default_factory=CiaganConfig)
    train: TrainingConfig = field(default_factory=TrainingConfig)


@dataclass(frozen=True)
class MethodConfig:
    """One method of the tables: stages anonymise@<name> and evaluate@<name>."""

    depends: str  # what the output depends on besides the data: its checkpoint, or its code (a DVC dependency)
    params: str  # the params section holding its settings (a DVC parameter), e.g. anonymisers.blur
    anonymiser: str | None = None  # the registered anonymiser; None: the method's own name
    root: str | None = None  # folder anonymiser: <root>/<dataset>/<pair_id>.png

    def anonymiser_name(self, method: str) -> str:
        return self.anonymiser or method


def _is_sha256(digest: str) -> bool:
    return re.fullmatch("[0-9a-fA-F]{64}", digest) is not None


@dataclass(frozen=True)
class ReleasedConfig:
    """One of the authors' released weight files: stage download-released@<method> (`released.<method>`)."""

    model: Literal["anonygan", "ciagan"]  # anonygan: AnonyGAN's Lightning checkpoint | ciagan: CIAGAN's generator
    # The file's SHA-256 (64 hex digits); null: the first download's is recorded and later ones must match it
    sha256: Annotated[str, Check(_is_sha256, "64 hex digits")] | None = None
    landmarks: Literal[68, 29] | None = None  # AnonyGAN: the file must have this many; null: what its keys show
    landmark_attention: bool | None = None  # AnonyGAN: the file must have Landmark Attention on / off; null: either

    def __post_init__(self):
        if self.model != "anonygan":
            for name in ("landmarks", "landmark_attention"):
                if getattr(self, name) is not None:
                    raise FieldError(name, f"is an AnonyGAN setting; {self.model}'s file has no variants")


@dataclass(frozen=True)
class AnonymiseConfig:
    batch_size: Annotated[int, at_least(1)] = 32


@dataclass(frozen=True)
class EvaluateConfig:
    metrics: list[str] = field(default_factory=metrics.available)  # computed for every method
    batch_size: Annotated[int, at_least(1)] = 32
    cache: str = ".cache/metrics"  # real-set features and embeddings, keyed by content, shared by every method


@dataclass(frozen=True)
class ReportConfig:
    grid_pairs: Annotated[int, at_least(1)] = 6  # pairs per dataset in the qualitative figure


@dataclass(frozen=True)
class Params:
    data: DataConfig = field(default_factory=DataConfig)
    download: DownloadConfig = field(default_factory=DownloadConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    variants: dict[Name, dict[str, Any]] = field(default_factory=dict)  # overrides of model and train settings
    ciagan: CiaganSettings = field(default_factory=CiaganSettings)
    anonymisers: dict[str, Any] = field(default_factory=dict)  # anonymiser -> its settings (defaults filled in)
    released: dict[Name, ReleasedConfig] = field(default_factory=dict)  # method -> the authors' file it loads
    methods: dict[Name, MethodConfig] = field(default_factory=dict)
    anonymise: AnonymiseConfig = field(default_factory=AnonymiseConfig)
    metrics: dict[str, Any] = field(default_factory=dict)  # registered metric -> its options (defaults filled in)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    report: ReportConfig = field(default_factory=ReportConfig)

    def section(self, dotted: str) -> Any:
        """The settings at a dotted key, e.g. `anonymisers.blur`; a ParamsError naming what is missing."""
        node: Any = self
        for depth, part in enumerate(dotted.split(".")):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif dataclasses.is_dataclass(node) and part in {f.name for f in dataclasses.fields(node)}:
                node = getattr(node, part)
            else:
                raise ParamsError(f"params.yaml has no '{'.'.join(dotted.split('.')[:depth + 1])}' section")
        return node

    def variant(self, name: str) -> tuple[ModelConfig, TrainConfig]:
        """The model and training settings of AnonyGAN variant `name`: `model` and `train` with its overrides."""
        if name not in self.variants:
            raise ParamsError(f"unknown variant {name!r}: params.yaml variants has {', '.join(self.variants)}")
        return _variant(self.model, self.train, name, self.variants[name])

    def release(self, name: str) -> ReleasedConfig:
        if name not in self.released:
            raise ParamsError(f"unknown released entry {name!r}: params.yaml released has {', '.join(self.released)}")
        return self.released[name]

    def method(self, name: str) -> MethodConfig:
        if name not in self.methods:
            raise ParamsError(f"unknown method {name!r}: params.yaml methods has {', '.join(self.methods)}")
        return self.methods[name]

    def anonymiser_settings(self, method: str) -> Any:
        """The typed settings the method's anonymiser takes: the section its entry names."""
        entry = self.method(method)
        settings = self.section(entry.params)
        expected = anonymiser_class(entry.anonymiser_name(method)).Settings
        if expected is not None and not isinstance(settings, expected):
            raise ParamsError(f"methods.{method}.params names {entry.params}, but anonymiser "
                              f"{entry.anonymiser_name(method)!r} takes {expected.__name__} settings")
        return settings


def load(path: Path) -> Params:
    """Read and check params.yaml (every section); a ParamsError naming the first bad key."""
    if not path.is_file():
        raise ParamsError(f"{path} not found: run the stages from the repository root")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ParamsError(f"{where}: not valid YAML ({getattr(error, 'problem', None) or error})") from None
    except UnicodeDecodeError as error:
        raise ParamsError(f"{path} is not UTF-8 text ({error.reason} at byte {error.start})") from None
    return from_mapping(raw or {})


def from_mapping(raw: Any) -> Params:
    """Params from a plain mapping (params.yaml's content), every value checked."""
    params = config.load(Params, raw, "")
    problem = crop_size_problem(*params.prepare.crop_size)
    if problem:
        raise ParamsError(f"prepare.{problem}")
    for name, overrides in params.variants.items():
        _variant(params.model, params.train, name, overrides)
    configurable = {name: anonymiser_class(name).Settings for name in available()
                    if anonymiser_class(name).Settings is not None}
    strays = sorted(set(params.anonymisers) - set(configurable))
    if strays:
        raise ParamsError(f"anonymisers.{strays[0]} is not an anonymiser with settings; "
                          f"those are {', '.join(configurable)}")
    anonymisers = {name: config.load(cls, params.anonymisers.get(name, {}), f"anonymisers.{name}")
                   for name, cls in configurable.items()}
    strays = sorted(set(params.metrics) - set(metrics.available()))
    if strays:
        raise ParamsError(f"metrics.{strays[0]} is not a metric; available: {', '.join(metrics.available())}")
    options = {name: metrics.load_options(name, params.metrics.get(name)) for name in metrics.available()}
    unknown = [name for name in params.evaluate.metrics if name not in metrics.available()]
    if unknown or not params.evaluate.metrics:
        raise ParamsError(f"evaluate.metrics must list metrics among {', '.join(metrics.available())}; "
                          f"got {params.evaluate.metrics!r}")
    params = dataclasses.replace(params, anonymisers=anonymisers, metrics=options)
    for name, entry in params.methods.items():
        try:
            anonymiser = anonymiser_class(entry.anonymiser_name(name))
        except KeyError as error:
            raise ParamsError(f"methods.{name}.anonymiser: {error.args[0]}") from None
        params.anonymiser_settings(name)
        release = params.released.get(name)
        if anonymiser.released_model is not None and (release is None or release.model != anonymiser.released_model):
            raise ParamsError(f"methods.{name} loads the {anonymiser.released_model} authors' weights: it needs "
                              f"released.{name} with model: {anonymiser.released_model} (download-released@{name})")
    return params


def _variant(model: ModelConfig, train: TrainConfig, name: str, overrides: dict[str, Any]
             ) -> tuple[ModelConfig, TrainConfig]:
    where = f"variants.{name}"
    model_keys = {f.name for f in dataclasses.fields(ModelConfig)}
    train_keys = {f.name for f in dataclasses.fields(TrainConfig)}
    strays = sorted(set(overrides) - model_keys - train_keys)
    if strays:
        raise ParamsError(f"{where}.{strays[0]} is not a setting; a variant overrides model or train settings")
    return (config.replaced(model, {k: v for k, v in overrides.items() if k in model_keys}, where),
            config.replaced(train, {k: v for k, v in overrides.items() if k in train_keys}, where))
