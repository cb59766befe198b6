"""dvc.yaml cannot go stale: every stage depends on every project file its command imports.

A stage's code is the closure of its command's module under imports (function-level imports
included, and each package's `__init__.py`), plus what it imports by name at run time: an
anonymise stage the module of its method's anonymiser (`baselines.catalogue`), an evaluate stage
every metric's module (`metrics.options`). Each file of that closure must be a dependency of the
stage or lie in a folder that is. The data stages must not import torch or any model, method or
metric code, so that a model change re-runs only the stages it affects.
"""

from __future__ import annotations

import ast
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
from dvc.repo import Repo

from baselines import catalogue
from metrics import options
from pipelines.config import from_mapping
from tests.helpers import REPO, module_imports, params_mapping

#: The project's top-level packages: imports of anything else (torch, numpy, ...) are not followed.
PACKAGES = ("anonygan", "baselines", "facedata", "infra", "metrics", "pipelines", "runtime")
DATA_STAGES = ("pipelines.download", "pipelines.prepare", "pipelines.photo_frame", "pipelines.pairs")
#: What the data stages may import of the model, method and metric packages: their settings, which checking
#: params.yaml needs, and nothing that computes.
SETTINGS_MODULES = {"anonygan", "anonygan.config", "baselines", "baselines.catalogue", "baselines.settings",
                    "baselines.ciagan", "baselines.ciagan.config", "metrics", "metrics.options"}


def module_file(name: str) -> Path | None:
    """The repository file of dotted module `name` (a module or a package's __init__), or None."""
    for candidate in (REPO / f"{name.replace('.', '/')}.py", REPO / name.replace(".", "/") / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@cache
def import_closure(*roots: str) -> dict[str, str]:
    """Project modules that importing `roots` can import, each with its file relative to the repository."""
    found: dict[str, str] = {}
    pending = list(roots)
    while pending:
        name = pending.pop()
        parts = name.split(".")
        if parts[0] not in PACKAGES or name in found:
            continue
        pending += [".".join(parts[:depth]) for depth in range(1, len(parts))]  # each package's __init__ runs
        path = module_file(name)
        if path is not None:
            found[name] = path.relative_to(REPO).as_posix()
            pending += module_imports(path)
    return found


@cache
def paper_params():
    return from_mapping(params_mapping())


def lazily_imported(module: str, item: str | None) -> tuple[str, ...]:
    """The modules a stage imports by name at run time."""
    params = paper_params()
    if module == "pipelines.anonymise":
        implementation = catalogue.entry(params.method(item).anonymiser_name(item)).implementation
        return (implementation.split(":")[0],)
    if module == "pipelines.evaluate":
        return tuple(sorted({metric.module for metric in options.METRICS.values()}))
    return ()


def stage_code(command: str) -> tuple[str, str | None]:
    """(module, item) of a stage command `python -m <module> [item]` or `torchrun ... -m <module> [item]`."""
    words = shlex.split(command)
    position = words.index("-m") + 1
    return words[position], (words[position + 1] if len(words) > position + 1 else None)


def uncovered(files: set[str], deps: set[str]) -> list[str]:
    """The files that are neither a dependency nor inside a folder that is one."""
    return sorted(file for file in files
                  if not any(file == dep or file.startswith(dep.rstrip("/") + "/") for dep in deps))


@cache
def resolved_stages() -> dict[str, tuple[str, frozenset[str]]]:
    """Every stage of dvc.yaml as DVC resolves it (foreach expanded): name -> (command, code dependencies)."""
    with Repo(str(REPO)) as repo:
        return {stage.addressing: (stage.cmd, frozenset(Path(dep.def_path).as_posix() for dep in stage.deps))
                for stage in repo.index.stages}


def stage_closure(name: str) -> set[str]:
    command, _ = resolved_stages()[name]
    module, item = stage_code(command)
    return set(import_closure(module, *lazily_imported(module, item)).values())


def test_every_stage_of_dvc_yaml_is_checked():
    stages = resolved_stages()
    params = paper_params()
    expected = {f"anonymise@{method}" for method in params.methods} | {f"train@{name}" for name in params.variants}
    assert expected <= set(stages) and "prepare@celeba" in stages and "report" in stages


@pytest.mark.parametrize("name", sorted(resolved_stages()))
def test_stage_depends_on_every_project_file_its_command_imports(name):
    missing = uncovered(stage_closure(name), set(resolved_stages()[name][1]))
    assert not missing, f"stage {name} imports {', '.join(missing)} but dvc.yaml does not list it"


def test_a_removed_dependency_is_named():
    closure, deps = stage_closure("anonymise@blur"), set(resolved_stages()["anonymise@blur"][1])
    assert "baselines/classic.py" in closure and not uncovered(closure, deps)
    assert uncovered(closure, deps - {"baselines/classic.py"}) == ["baselines/classic.py"]
    assert "facedata/crops.py" in uncovered(closure, deps - {"facedata"})


def test_a_model_change_reaches_only_the_stages_that_import_the_model():
    importing = {name for name in resolved_stages() if "anonygan/model.py" in stage_closure(name)}
    params = paper_params()
    anonygan_methods = {f"anonymise@{m}" for m, e in params.methods.items() if e.code == "anonygan"}
    assert importing == ({f"train@{v}" for v in params.variants} | anonygan_methods
                         | {f"download-released@{name}" for name in params.released})


@pytest.mark.parametrize("module", DATA_STAGES)
def test_data_stages_import_no_torch_nor_model_method_or_metric_code(module):
    code = (f"import {module}, sys; print(sorted(name for name in sys.modules if name == 'torch' or "
            f"name.split('.')[0] in {{'anonygan', 'baselines', 'metrics', 'runtime'}}))")
    loaded = ast.literal_eval(subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                                             check=True).stdout)
    assert "torch" not in loaded and set(loaded) <= SETTINGS_MODULES, loaded
    statically = {name for name in import_closure(module) if name.split(".")[0] in {"anonygan", "baselines",
                                                                                     "metrics", "runtime"}}
    assert statically <= SETTINGS_MODULES, statically - SETTINGS_MODULES
