"""Apply a parameter profile (profiles/<name>.yaml) to params.yaml, then run the pipeline.

    python -m pipelines.profile small              # apply, then `dvc repro`
    python -m pipelines.profile small --no-repro   # only rewrite params.yaml (git diff shows what changed)

A profile only changes values: a key that params.yaml does not have is an error, so a typo
cannot silently leave the default in place. Comments in params.yaml are kept.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import yaml
from ruamel.yaml import YAML

import pipelines
from infra.atomic import atomic_path
from infra.errors import ParamsError
from pipelines.layout import Layout
from pipelines.stage import guarded


def overlay(base: dict, changes: dict, where: str = "") -> None:
    """Set every leaf of `changes` in `base`, in place; mappings merge, everything else replaces."""
    for key, value in changes.items():
        name = f"{where}.{key}" if where else str(key)
        if key not in base:
            raise ParamsError(f"profile sets {name}, which params.yaml does not have")
        if isinstance(value, dict) and isinstance(base[key], dict):
            overlay(base[key], value, name)
        else:
            base[key] = value


def changes(profile: str, layout: Layout = Layout()) -> dict:
    """The values profiles/<profile>.yaml sets, as a nested mapping."""
    path = layout.root / "profiles" / f"{profile}.yaml"
    if not path.is_file():
        available = ", ".join(sorted(p.stem for p in path.parent.glob("*.yaml"))) or "none"
        raise ParamsError(f"no profile {path}; available: {available}")
    return yaml.safe_load(path.read_text()) or {}


def apply(profile: str, layout: Layout = Layout()) -> None:
    """Rewrite layout's params.yaml with the profile's values."""
    document = YAML()  # round-trip mode keeps params.yaml's comments and layout
    params = document.load(layout.params_file.read_text())
    overlay(params, changes(profile, layout))
    with atomic_path(layout.params_file) as tmp, open(tmp, "w") as handle:
        document.dump(params, handle)


def main(argv: list[str] | None = None) -> None:
    pipelines.started()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile")
    parser.add_argument("--no-repro", action="store_true", help="only rewrite params.yaml")
    args = parser.parse_args(argv)
    guarded("profile", lambda: apply(args.profile))
    print(f"params.yaml now has the {args.profile!r} profile's values (git diff params.yaml shows them)")
    if not args.no_repro:
        sys.exit(subprocess.run([sys.executable, "-m", "dvc", "repro"], check=False).returncode)


if __name__ == "__main__":
    main()
