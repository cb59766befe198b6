"""params.yaml holds the settings classes' defaults: the dataclasses are the one source of defaults.

Every settable key of every settings class (the sections of `Params`, each catalogued anonymiser's
settings, each metric's options) must be present in params.yaml, with the class's default value
unless the key is listed in DELIBERATE with the reason it differs.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import pytest

from baselines import catalogue
from infra import settings
from metrics import options
from pipelines.config import Params
from tests.helpers import params_mapping

#: Keys whose params.yaml value differs from the class default on purpose: dotted key -> why. None today.
DELIBERATE: dict[str, str] = {}


def departures(cls: type, section: dict[str, Any], where: str) -> list[str]:
    """Keys of settings class `cls` missing from `section` or set to another value than the default."""
    hints = typing.get_type_hints(cls, include_extras=True)
    found = []
    for field in dataclasses.fields(cls):
        if not field.init or not field.metadata.get("params", True):
            continue
        key = settings.join(where, field.name)
        if field.name not in section:
            found.append(f"{key} is missing")
            continue
        default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
        if dataclasses.is_dataclass(default):
            found += departures(type(default), section[field.name], key)
        elif default is not dataclasses.MISSING and not isinstance(default, dict):
            value = settings.convert(hints[field.name], section[field.name], key)
            if value != default and key not in DELIBERATE:
                found.append(f"{key} is {section[field.name]!r}, the default {default!r}")
    return found


def every_departure(raw: dict[str, Any]) -> list[str]:
    found = departures(Params, raw, "")
    for name, entry in catalogue.ANONYMISERS.items():
        if entry.settings is not None:
            found += departures(entry.settings, raw["anonymisers"].get(name, {}), f"anonymisers.{name}")
    for name, metric in options.METRICS.items():
        found += departures(metric.options, raw["metrics"].get(name, {}), f"metrics.{name}")
    return found


def test_params_yaml_holds_every_default():
    assert every_departure(params_mapping()) == []


@pytest.mark.parametrize(("section", "key", "value", "expected"), [
    ("train", "epochs", 699, "train.epochs is 699, the default 700"),
    ("metrics", "kid", {"subsets": 10}, "metrics.kid.subsets is 10, the default 100"),
    ("anonymisers", "blur", {}, "anonymisers.blur.kernel_size is missing"),
])
def test_a_changed_or_missing_default_is_named(section, key, value, expected):
    raw = params_mapping()
    raw[section] = {**raw[section], key: value}
    assert expected in every_departure(raw)
