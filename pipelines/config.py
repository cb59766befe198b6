"""params.yaml, read once into typed sections: the one configuration every stage receives.

Each section is the settings class of the package that uses it (`facedata.crops.PrepareConfig`,
`anonygan.config.ModelConfig`, `baselines.settings.BlurConfig`, a metric's options class, ...),
loaded by the generic `infra.settings.load`, so every bad value or unknown key is a `ParamsError`
naming its dotted key. Every value is checked here, once: the objects that reach stages,
anonymisers, metrics and trainers are these instances, never dicts. The whole file is checked
when it is loaded, so a stage never starts on settings that another stage would reject later;
checking it imports no torch and no model, method or metric code (the settings classes and the
catalogues `baselines.catalogue` and `metrics.options` are plain dataclasses).

Sections whose keys are names (variants, anonymisers, metrics, methods) are checked against what
they name: a variant overrides `model` and `train` settings, an `anonymisers` entry is a catalogued
anonymiser's settings, a `metrics` entry a catalogued metric's options.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

import yaml

from anonygan.config import ModelConfig, TrainConfig, crop_size_problem
from baselines import catalogue
from baselines.ciagan.config import CiaganConfig
from facedata.crops import PrepareConfig
from facedata.datasets import DataConfig
from facedata.protocol import PairsConfig
from infra import settings
from infra.errors import ParamsError
from infra.fetch import DownloadConfig
from infra.settings import Check, FieldError, at_least, slug
from metrics import options

#: Names that become folder names (outputs/<dataset>/<method>, models/<method>): checked as plain names.
Name = Annotated[str, slug]


@dataclass(frozen=True)
class MethodConfig:
    """One method of the tables: stages anonymise@<name> and evaluate@<name>."""

    code: str  # its anonymiser's code: the file or package of its catalogue entry (a DVC dependency)
    depends: str  # what the output depends on besides the data and code: its weights (a DVC dependency)
    params: str  # the params section holding its settings (a DVC parameter), e.g. anonymisers.blur
    anonymiser: str | None = None  # the catalogued anonymiser; None: the method's own name
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


class Variant(NamedTuple):
    """One AnonyGAN variant (`variants.<name>`): `model` and `train` with the entry's overrides applied."""

    model: ModelConfig
    train: TrainConfig


@dataclass(frozen=True)
class AnonymiseConfig:
    batch_size: Annotated[int, at_least(1)] = 32  # faces per anonymiser call
    # The parrot's gallery (pipelines.gallery): anonymised with the probe's condition or another identity's
    gallery_condition: Literal["same", "different"] = "different"
    # png: lossless | jpeg75: as the AnonyGAN authors saved their outputs (PIL's JPEG defaults: quality 75, 4:2:0)
    image_format: Literal["png", "jpeg75"] = "png"


@dataclass(frozen=True)
class EvaluateConfig:
    metrics: list[str] = field(default_factory=options.available)  # computed for every method
    batch_size: Annotated[int, at_least(1)] = 32
    cache: str = ".cache/metrics"  # real-set features and embeddings, keyed by content, shared by every method
    interval: options.IntervalOptions = field(default_factory=options.IntervalOptions)  # every value's uncertainty
    # LFW: pair (each of pairs.txt's pairs, one anonymised image each) | second_photo (the authors' folder: one image
    # per distinct second photo, that of the last pair naming it; pair metrics read it for every pair naming it)
    lfw_unit: Literal["pair", "second_photo"] = "pair"
    # LFW: crop (the 220x180 eye-centred crop, every dataset's frame) | photo (the authors': the whole photo resized to
    # 256x256, facedata.photo_frame; methods that only take crops are pasted back into it). Read by anonymise too.
    lfw_frame: Literal["crop", "photo"] = "crop"


@dataclass(frozen=True)
class ReportConfig:
    grid_pairs: Annotated[int, at_least(1)] = 6  # pairs per dataset in the qualitative figure
    latex_intervals: bool = True  # the LaTeX tables show each value's interval (Markdown and CSV always do)


@dataclass(frozen=True)
class Params:
    data: DataConfig = field(default_factory=DataConfig)
    download: DownloadConfig = field(default_factory=DownloadConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # The overrides of model and train settings in params.yaml; loaded into each variant's settings.
    variants: dict[str, Variant] = field(default_factory=dict, metadata={"params": False})
    ciagan: CiaganConfig = field(default_factory=CiaganConfig)
    anonymisers: dict[str, Any] = field(default_factory=dict)  # anonymiser -> its settings (defaults filled in)
    released: dict[Name, ReleasedConfig] = field(default_factory=dict)  # method -> the authors' file it loads
    methods: dict[Name, MethodConfig] = field(default_factory=dict)
    anonymise: AnonymiseConfig = field(default_factory=AnonymiseConfig)
    metrics: dict[str, Any] = field(default_factory=dict)  # metric -> its options (defaults filled in)
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

    def frame(self, dataset: str) -> str:
        """The frame `dataset` is anonymised and measured in: `evaluate.lfw_frame` on LFW, the crop elsewhere."""
        return self.evaluate.lfw_frame if dataset == "lfw" else "crop"

    def variant(self, name: str) -> Variant:
        """The model and training settings of AnonyGAN variant `name`."""
        if name not in self.variants:
            raise ParamsError(f"unknown variant {name!r}: params.yaml variants has {', '.join(self.variants)}")
        return self.variants[name]

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
        name = entry.anonymiser_name(method)
        section = self.section(entry.params)
        expected = catalogue.entry(name).settings
        if expected is not None and not isinstance(section, expected):
            raise ParamsError(f"methods.{method}.params names {entry.params}, but anonymiser "
                              f"{name!r} takes {expected.__name__} settings")
        return section


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
    """Params from a plain mapping (params.yaml's content), every value checked once."""
    if not isinstance(raw, dict):
        raise ParamsError(f"params.yaml must be a mapping of sections; got {raw!r}")
    overrides = settings.convert(dict[Name, dict[str, Any]], raw.get("variants", {}), "variants")
    params = settings.load(Params, {key: value for key, value in raw.items() if key != "variants"}, "")
    problem = crop_size_problem(*params.prepare.crop_size)
    if problem:
        raise ParamsError(f"prepare.{problem}")
    params = dataclasses.replace(params, variants={name: _variant(params, name, changes)
                                                   for name, changes in overrides.items()},
                                 anonymisers=_anonymisers(params.anonymisers), metrics=_metric_options(params))
    _check_methods(params)
    return params


def _variant(params: Params, name: str, overrides: dict[str, Any]) -> Variant:
    where = f"variants.{name}"
    model_keys = {f.name for f in dataclasses.fields(ModelConfig)}
    train_keys = {f.name for f in dataclasses.fields(TrainConfig)}
    strays = sorted(set(overrides) - model_keys - train_keys)
    if strays:
        raise ParamsError(f"{where}.{strays[0]} is not a setting; a variant overrides model or train settings")
    return Variant(settings.replaced(params.model, {k: v for k, v in overrides.items() if k in model_keys}, where),
                   settings.replaced(params.train, {k: v for k, v in overrides.items() if k in train_keys}, where))


def _anonymisers(sections: dict[str, Any]) -> dict[str, Any]:
    """Every configurable anonymiser's settings, from its section (defaults where it has none)."""
    configurable = {name: entry.settings for name, entry in catalogue.ANONYMISERS.items() if entry.settings}
    strays = sorted(set(sections) - set(configurable))
    if strays:
        raise ParamsError(f"anonymisers.{strays[0]} is not an anonymiser with settings; "
                          f"those are {', '.join(configurable)}")
    return {name: settings.load(cls, sections.get(name, {}), f"anonymisers.{name}")
            for name, cls in configurable.items()}


def _metric_options(params: Params) -> dict[str, Any]:
    """Every metric's options, from its section (defaults where it has none); evaluate.metrics names known ones."""
    known = options.available()
    strays = sorted(set(params.metrics) - set(known))
    if strays:
        raise ParamsError(f"metrics.{strays[0]} is not a metric; available: {', '.join(known)}")
    unknown = [name for name in params.evaluate.metrics if name not in known]
    if unknown or not params.evaluate.metrics:
        raise ParamsError(f"evaluate.metrics must list metrics among {', '.join(known)}; "
                          f"got {params.evaluate.metrics!r}")
    return {name: settings.load(options.metric(name).options, params.metrics.get(name, {}), f"metrics.{name}")
            for name in known}


def _check_methods(params: Params) -> None:
    """Each `methods` entry against its anonymiser's catalogue entry and the sections it names."""
    for name, method in params.methods.items():
        try:
            entry = catalogue.entry(method.anonymiser_name(name))
        except KeyError as error:
            raise ParamsError(f"methods.{name}.anonymiser: {error.args[0]}") from None
        if not (entry.code == method.code or entry.code.startswith(method.code.rstrip("/") + "/")):
            raise ParamsError(f"methods.{name}.code is {method.code}, but anonymiser "
                              f"{method.anonymiser_name(name)!r} is in {entry.code}: name that (or a folder above it)")
        params.anonymiser_settings(name)
        release = params.released.get(name)
        if entry.released_model is not None and (release is None or release.model != entry.released_model):
            raise ParamsError(f"methods.{name} loads the {entry.released_model} authors' weights: it needs "
                              f"released.{name} with model: {entry.released_model} (download-released@{name})")
