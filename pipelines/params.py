"""Load params.yaml and turn its sections into validated settings with clear errors."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

PARAMS_FILE = Path("params.yaml")


class ParamsError(ValueError):
    pass


def load(path: Path = PARAMS_FILE) -> dict[str, Any]:
    if not path.is_file():
        raise ParamsError(f"{path} not found: run the stages from the repository root")
    with open(path) as handle:
        params = yaml.safe_load(handle) or {}
    if not isinstance(params, dict):
        raise ParamsError(f"{path} must hold a mapping at the top level")
    return params


def section(params: dict[str, Any], dotted: str) -> dict[str, Any]:
    """The mapping at `dotted` (e.g. "data.celeba"), or a ParamsError naming what is missing."""
    node: Any = params
    for depth, part in enumerate(dotted.split(".")):
        if not isinstance(node, dict) or part not in node:
            raise ParamsError(f"params.yaml has no '{'.'.join(dotted.split('.')[: depth + 1])}' section")
        node = node[part]
    if not isinstance(node, dict):
        raise ParamsError(f"params.yaml: '{dotted}' must be a mapping, got {node!r}")
    return node


def choice(value: Any, name: str, options: tuple[str, ...] | list[str]) -> str:
    if value not in options:
        raise ParamsError(f"{name} must be one of {', '.join(map(str, options))}; got {value!r}")
    return value


def integer(value: Any, name: str, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise ParamsError(f"{name} must be an integer{bound}; got {value!r}")
    return value


def fraction(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ParamsError(f"{name} must be a number in [0, 1]; got {value!r}")
    return float(value)


def run_stage(
    label: str,
    function: Callable[..., Any],
    *args: Any,
    errors: tuple[type[Exception], ...] = (ParamsError, FileNotFoundError),
) -> Any:
    """Call `function(*args, params)`; an expected error ends the process with one line naming the stage."""
    try:
        return function(*args, load())
    except errors as error:
        raise SystemExit(f"{label}: {error}") from None


def dataset_stage(
    label: str,
    function: Callable[..., Any],
    doc: str | None,
    argv: list[str] | None = None,
    errors: tuple[type[Exception], ...] = (ParamsError, FileNotFoundError),
) -> Any:
    """Entry point of a per-dataset stage: `python -m pipelines.<stage> celeba|lfw`."""
    from facedata.datasets import DATASETS

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=DATASETS)
    dataset = parser.parse_args(argv).dataset
    return run_stage(f"{label}@{dataset}", function, dataset, errors=errors)


def method_stage(
    label: str,
    function: Callable[..., Any],
    doc: str | None,
    argv: list[str] | None = None,
    errors: tuple[type[Exception], ...] = (ParamsError, FileNotFoundError),
) -> None:
    """Entry point of a per-method stage: `python -m pipelines.<stage> <method>`, run on every dataset."""
    from facedata.datasets import DATASETS

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("method")
    method = parser.parse_args(argv).method
    for dataset in DATASETS:
        run_stage(f"{label}@{method} ({dataset})", function, dataset, method, errors=errors)
