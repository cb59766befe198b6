"""Wrong parameter values are clear errors naming the parameter."""

from __future__ import annotations

import pytest

from pipelines.params import ParamsError, load, section
from pipelines.prepare import config_from_params
from tests.conftest import REPO


def params_with(**prepare):
    params = load(REPO / "params.yaml")
    params["prepare"].update(prepare)
    return params


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"crop_height": "tall"}, "prepare.crop_height must be an integer >= 16"),
        ({"crop_width": 8}, "prepare.crop_width must be an integer >= 16"),
        ({"detect_upsample": 7}, "prepare.detect_upsample must be 0..3"),
        ({"fallback_detector": "yolo"}, "prepare.fallback_detector must be cnn or null"),
        ({"eye_scale": 0.1}, r"prepare.eye_scale must be in \[1, 20\]"),
        ({"workers": -1}, "prepare.workers must be an integer >= 0"),
        ({"colour": "blue"}, "unexpected keyword argument 'colour'"),
    ],
)
def test_bad_prepare_settings(overrides, message):
    with pytest.raises(ParamsError, match=message):
        config_from_params(params_with(**overrides))


def test_defaults_are_valid_and_workers_zero_means_all_cores():
    import os

    config, workers = config_from_params(load(REPO / "params.yaml"))
    assert config.crop_size == (220, 180) and workers == os.cpu_count()


def test_missing_sections_are_named(tmp_path):
    with pytest.raises(ParamsError, match="no 'data.celeba' section"):
        section({"data": {}}, "data.celeba")
    with pytest.raises(ParamsError, match="not found"):
        load(tmp_path / "params.yaml")


def test_unknown_dataset_variant_is_named():
    from pipelines.download import run

    params = load(REPO / "params.yaml")
    params["data"]["lfw"]["variant"] = "sharpened"
    with pytest.raises(ParamsError, match="data.lfw.variant must be one of"):
        run("lfw", params)


def test_a_stage_with_a_bad_value_exits_with_one_line_naming_it(tmp_path):
    import subprocess
    import sys

    import yaml

    params = load(REPO / "params.yaml")
    params["data"]["lfw"]["variant"] = "sharpened"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.download", "lfw"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO), "PATH": ""},
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "download@lfw: data.lfw.variant must be one of original, funneled, deepfunneled; got 'sharpened'"
    ]
