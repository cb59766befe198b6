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
from pathlib import Path

import yaml
from ruamel.yaml import YAML

from facedata.atomic import atomic_path
from pipelines.params import PARAMS_FILE, ParamsError

PROFILES = Path("profiles")


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


def apply(profile: str, params_file: Path = PARAMS_FILE, profiles: Path = PROFILES) -> None:
    path = profiles / f"{profile}.yaml"
    if not path.is_file():
        available = ", ".join(sorted(p.stem for p in profiles.glob("*.yaml"))) or "none"
        raise ParamsError(f"no profile {path}; available: {available}")
    changes = yaml.safe_load(path.read_text()) or {}
    document = YAML()  # round-trip mode keeps params.yaml's comments and layout
    params = document.load(params_file.read_text())
    overlay(params, changes)
    with atomic_path(params_file) as tmp, open(tmp, "w") as handle:
        document.dump(params, handle)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile")
    parser.add_argument("--no-repro", action="store_true", help="only rewrite params.yaml")
    args = parser.parse_args(argv)
    try:
        apply(args.profile)
    except ParamsError as error:
        raise SystemExit(f"profile: {error}") from None
    print(f"params.yaml now has the {args.profile!r} profile's values (git diff params.yaml shows them)")
    if not args.no_repro:
        sys.exit(subprocess.run([sys.executable, "-m", "dvc", "repro"], check=False).returncode)


if __name__ == "__main__":
    main()
