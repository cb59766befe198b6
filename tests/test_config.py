"""The typed configuration: the generic loader, params.yaml's sections, and bad values through every stage."""

from __future__ import annotations

import dataclasses
import importlib
import re
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Annotated, Literal

import pytest
import yaml

from infra import settings as config
from infra.errors import ParamsError
from infra.settings import FieldError, above, at_least, odd
from pipelines import stage
from pipelines.config import Params, ReleasedConfig, from_mapping
from pipelines.layout import Layout
from tests.helpers import REPO, dvc, module_imports, params_mapping, repository_copy, write_params


@dataclass(frozen=True)
class Inner:
    rate: Annotated[float, above(0)] = 1.0


@dataclass(frozen=True)
class Example:
    size: Annotated[int, odd, at_least(1)] = 3
    mode: Literal["a", "b"] = "a"
    limit: Annotated[int, at_least(0)] | None = None
    pair: tuple[float, float] = (0.5, 0.9)
    names: list[str] = field(default_factory=list)
    inner: Inner = field(default_factory=Inner)
    table: dict[str, Inner] = field(default_factory=dict)

    def __post_init__(self):
        if self.pair[0] > self.pair[1]:
            raise FieldError("pair", "must be increasing")


def test_loader_converts_valid_values_and_fills_defaults():
    loaded = config.load(Example, {"size": 5, "pair": [1, 2], "limit": None, "inner": {"rate": 2},
                                   "table": {"x": {}}}, "example")
    assert loaded == Example(size=5, pair=(1.0, 2.0), inner=Inner(2.0), table={"x": Inner()})
    assert isinstance(loaded.pair[0], float) and config.load(Example, {}, "example") == Example()
    assert config.replaced(loaded, {"mode": "b"}, "example") == dataclasses.replace(loaded, mode="b")


@pytest.mark.parametrize(("mapping", "message"), [
    ({"size": 4}, "example.size must be odd; got 4"),
    ({"size": -1}, "example.size must be >= 1; got -1"),
    ({"size": True}, "example.size must be an integer; got True"),
    ({"size": "3"}, "example.size must be an integer; got '3'"),
    ({"mode": "c"}, "example.mode must be one of a, b; got 'c'"),
    ({"limit": -2}, "example.limit must be >= 0; got -2"),
    ({"pair": [1.0]}, r"example.pair must be a list of 2 values; got \[1.0\]"),
    ({"pair": [0.9, 0.5]}, "example.pair must be increasing"),
    ({"names": "a"}, "example.names must be a list; got 'a'"),
    ({"inner": {"rate": 0}}, "example.inner.rate must be > 0; got 0"),
    ({"inner": {"speed": 1}}, "example.inner.speed is not a setting; example.inner has rate"),
    ({"table": {"x": {"rate": "fast"}}}, "example.table.x.rate must be a number; got 'fast'"),
    ({"sise": 3}, "example.sise is not a setting; example has size, mode, limit"),
    ([1, 2], r"example must be a mapping of settings; got \[1, 2\]"),
])
def test_loader_errors_name_the_dotted_key(mapping, message):
    with pytest.raises(ParamsError, match=message):
        config.load(Example, mapping, "example")


def test_params_yaml_holds_the_code_defaults():
    """Every default in the code is the value params.yaml sets (dataset roots and process counts aside)."""
    loaded, defaults = from_mapping(params_mapping()), Params()
    for section in ("data", "download", "prepare", "pairs", "model", "train", "ciagan", "anonymise", "evaluate",
                    "report", "anonymisers", "metrics"):
        assert getattr(loaded, section) == getattr(from_mapping({}), section), section
    assert loaded.prepare == defaults.prepare and loaded.model == defaults.model
    assert set(loaded.methods) == {"original", "blur", "pixelate", "ciagan", *loaded.variants, *loaded.released}
    # The authors' released files, nothing pinned: whatever the first download is, is recorded.
    assert loaded.released == {"anonygan-released": ReleasedConfig(model="anonygan"),
                               "ciagan-released": ReleasedConfig(model="ciagan")}


def test_a_variant_overrides_model_and_train_settings_only():
    mapping = params_mapping()
    mapping["variants"]["anonygan-68"]["lr"] = 1.0
    with pytest.raises(ParamsError, match="variants.anonygan-68.lr is not a setting; a variant overrides model"):
        from_mapping(mapping)


#: (dotted key, bad value, stage module, item, what the one line must contain)
BAD_VALUES = [
    ("data.celeba.variant", "sharpened", "download", "celeba", "data.celeba.variant must be one of aligned, wild"),
    ("data.lfw.root", 5, "download", "lfw", "data.lfw.root must be a string or null; got 5"),
    ("data.celeba.colour", "blue", "prepare", "celeba", "data.celeba.colour is not a setting"),
    ("data.celeba.min_images_per_identity", 0, "prepare", "celeba", "min_images_per_identity must be >= 1"),
    ("download.timeout_s", "fast", "download", "lfw", "download.timeout_s must be a number; got 'fast'"),
    ("download.retries", -1, "download", "lfw", "download.retries must be >= 0; got -1"),
    ("prepare.crop_width", "wide", "prepare", "lfw", "prepare.crop_width must be an integer; got 'wide'"),
    ("prepare.crop_width", 181, "prepare", "lfw", r"prepare.crop_width = 181: AnonyGAN needs crop sides that are "
                                                  r"multiples of 4 .* at least 48 px .* e.g. 180"),
    ("prepare.crop_height", 44, "train", "anonygan-68", r"prepare.crop_height = 44: AnonyGAN needs .* e.g. 48"),
    ("prepare.eye_scale", 0.1, "prepare", "lfw", r"prepare.eye_scale must be in \[1.0, 20.0\]; got 0.1"),
    ("prepare.fallback_detector", "yolo", "prepare", "lfw", "prepare.fallback_detector must be one of cnn or null"),
    ("prepare.workers", -1, "prepare", "lfw", "prepare.workers must be >= 0; got -1"),
    ("pairs.seed", 1.5, "pairs", None, "pairs.seed must be an integer; got 1.5"),
    ("pairs.celeba.same_image_ratio", 1.5, "pairs", None, r"pairs.celeba.same_image_ratio must be in \[0.0, 1.0\]"),
    ("pairs.lfw.condition_pool", "anywhere", "pairs", None, "pairs.lfw.condition_pool must be one of all_pairs"),
    ("pairs.lfw.pairs_per_class", 0, "pairs", None, "pairs.lfw.pairs_per_class must be >= 1; got 0"),
    ("model.output_blend", "paper", "train", "anonygan-68", "model.output_blend must be one of context, condition"),
    ("model.landmarks", 30, "train", "anonygan-68", "model.landmarks must be one of 68, 29; got 30"),
    ("train.lr", 1.0, "train", "anonygan-68", "train.lr is not a setting"),
    ("train.samples_per_epoch", 2, "train", "anonygan-68", r"train.samples_per_epoch \(2\) must be at least"),
    ("train.betas", [0.5], "train", "anonygan-68", "train.betas must be a list of 2 values"),
    ("train.precision", "fp16", "train", "anonygan-68", "train.precision must be one of bf16, fp32; got 'fp16'"),
    ("variants.anonygan-68.landmarks", 30, "train", "anonygan-68", "variants.anonygan-68.landmarks must be one of"),
    ("ciagan.model.image_size", 100, "train_ciagan", None, "ciagan.model.image_size must be a power of two >= 8"),
    ("ciagan.train.batch_size", 3, "train_ciagan", None, "ciagan.train.batch_size must be even; got 3"),
    ("ciagan.model.identities", 5, "train_ciagan", None, "ciagan.model.identities is not a setting"),
    ("anonymisers.blur.kernel_size", 100, "anonymise", "blur", "anonymisers.blur.kernel_size must be odd; got 100"),
    ("anonymisers.pixelate.cells", 0, "anonymise", "pixelate", "anonymisers.pixelate.cells must be >= 1; got 0"),
    ("anonymisers.anonygan.output", "pasted", "anonymise", "anonygan-68", "anonymisers.anonygan.output must be one"),
    ("anonymisers.ciagan.spectral_norm", "off", "anonymise", "ciagan", "spectral_norm must be one of update, frozen"),
    ("released.anonygan-released.landmarks", 30, "download_released", "anonygan-released",
     "released.anonygan-released.landmarks must be one of 68, 29 or null; got 30"),
    ("released.ciagan-released.sha256", "beef", "download_released", "ciagan-released",
     "released.ciagan-released.sha256 must be 64 hex digits; got 'beef'"),
    ("anonymisers.deepprivacy", {}, "anonymise", "blur", "anonymisers.deepprivacy is not an anonymiser with settings"),
    ("methods.blur.anonymiser", "blurry", "anonymise", "blur", "methods.blur.anonymiser: unknown anonymiser"),
    ("methods.blur.params", "anonymisers.pixelate", "anonymise", "blur", "methods.blur.params names anonymisers"),
    ("methods.blur.code", "baselines/folder.py", "anonymise", "blur",
     "methods.blur.code is baselines/folder.py, but anonymiser 'blur' is in baselines/classic.py"),
    ("anonymise.batch_size", "all", "anonymise", "blur", "anonymise.batch_size must be an integer; got 'all'"),
    ("metrics.detection_mtcnn.threshold", 7, "evaluate", "blur", r"detection_mtcnn.threshold must be in \[0.0, 1.0\]"),
    ("metrics.fid.resize", "bicubic", "evaluate", "blur", "metrics.fid.resize must be one of clean, legacy_pytorch"),
    ("metrics.kid.subsets", 0, "evaluate", "blur", "metrics.kid.subsets must be >= 1; got 0"),
    ("metrics.psnr", {}, "evaluate", "blur", "metrics.psnr is not a metric"),
    ("evaluate.metrics", ["fid", "psnr"], "evaluate", "blur", "evaluate.metrics must list metrics among"),
    ("evaluate.batch_size", 0, "evaluate", "blur", "evaluate.batch_size must be >= 1; got 0"),
    ("report.grid_pairs", 0, "report", None, "report.grid_pairs must be >= 1; got 0"),
    ("reports", {}, "report", None, "reports is not a setting; params.yaml has data, download"),
]


def with_value(dotted: str, value) -> dict:
    mapping = params_mapping()
    *parents, leaf = dotted.split(".")
    node = mapping
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return mapping


def test_a_method_code_may_name_a_folder_above_its_anonymiser():
    assert from_mapping(with_value("methods.ciagan.code", "baselines")).method("ciagan").code == "baselines"


@pytest.mark.parametrize(("dotted", "value", "module", "item", "message"), BAD_VALUES,
                         ids=[case[0] for case in BAD_VALUES])
def test_a_bad_value_stops_its_stage_with_one_line_naming_the_key(dotted, value, module, item, message, tmp_path,
                                                                   capsys):
    layout = Layout(tmp_path)
    write_params(layout, with_value(dotted, value))
    entry = importlib.import_module(f"pipelines.{module}")
    with pytest.raises(SystemExit) as stop:
        entry.main([item] if item else [], layout=layout)
    lines = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == stage.USER_ERROR and len(lines) == 1, lines
    label = {"train_ciagan": "train-ciagan", "download_released": "download-released"}.get(module, module) + (
        f"@{item}" if item else "")
    assert lines[0].startswith(f"{label}: ") and dotted.split(".")[0] in lines[0]
    assert re.search(message, lines[0]), lines[0]


def test_every_params_section_has_a_bad_value_in_the_table():
    sections = {case[0].split(".")[0] for case in BAD_VALUES}
    assert {f.name for f in dataclasses.fields(Params)} <= sections
    assert len(BAD_VALUES) >= 25


@pytest.mark.parametrize(("module", "item"), [("prepare", "celeba"), ("train_ciagan", None)])
def test_the_command_line_prints_one_line_and_exits_with_status_2(module, item, tmp_path):
    layout = Layout(tmp_path)
    write_params(layout, with_value("prepare.detect_upsample", 7))
    result = subprocess.run([sys.executable, "-m", f"pipelines.{module}", *([item] if item else [])],
                            cwd=tmp_path, capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": ""})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"{module.replace('_', '-')}{'@' + item if item else ''}: "
        "prepare.detect_upsample must be in [0, 3]; got 7"]


def test_a_missing_params_file_and_invalid_yaml_are_one_line(tmp_path, capsys):
    from pipelines import pairs

    for content in (None, "data: [unclosed"):
        if content is not None:
            (tmp_path / "params.yaml").write_text(content)
        with pytest.raises(SystemExit):
            pairs.main([], layout=Layout(tmp_path))
        line, = capsys.readouterr().err.strip().splitlines()
        assert line.startswith("pairs: ") and ("not found" in line or "not valid YAML" in line)


def test_no_lower_package_imports_the_stage_layer():
    for package in ("anonygan", "baselines", "facedata", "infra", "metrics", "runtime"):
        for path in (REPO / package).rglob("*.py"):
            assert not any(name.split(".")[0] == "pipelines" for name in module_imports(path)), path


@pytest.mark.slow
def test_a_fifth_variant_is_one_params_entry_away_from_its_stages(tmp_path):
    layout = repository_copy(tmp_path / "repo")
    mapping = yaml.safe_load(layout.params_file.read_text())
    mapping["variants"]["anonygan-68-j5"] = {"attention_kernel": 5}
    mapping["methods"]["anonygan-68-j5"] = {"anonymiser": "anonygan", "code": "anonygan",
                                            "params": "anonymisers.anonygan",
                                            "depends": "models/anonygan-68-j5/checkpoint.pt"}
    write_params(layout, mapping)
    stages = dvc(layout, "stage", "list", "--name-only").split()
    assert {"train@anonygan-68-j5", "anonymise@anonygan-68-j5", "evaluate@anonygan-68-j5"} <= set(stages)
    model, _ = from_mapping(mapping).variant("anonygan-68-j5")
    assert model.attention_kernel == 5 and model.landmark_attention
