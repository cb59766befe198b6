"""The one entry point of every stage: parse the item, load params.yaml, run, fail in one line.

    main(run, "prepare", __doc__, item="dataset", choices=DATASETS)

calls `run(params, layout, item)` (or `run(params, layout)` for a stage without items). A
`SuiteError` (bad parameter, bad data, missing input or weights, failed download, ...) ends the
process with one line `<stage>@<item>: <message>` on stderr and exit status 2; an interruption
with one line and status 130; a full disk with one line naming the file and the free space, and
status 2. Anything else is a bug and keeps its traceback.

A stage holds a lock while it runs (`infra.locks`), in the folder `lock_folder(layout, item)`
names (its output folder; by default the repository root): the same stage started again
while it runs refuses in one line. Under torchrun the first process holds it for the group.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pipelines
from infra.atomic import DiskFullError
from infra.errors import SuiteError
from infra.locks import stage_lock
from pipelines import config
from pipelines.layout import Layout

#: Exit status of a stage stopped by a SuiteError.
USER_ERROR = 2


def guarded(label: str, function: Callable[[], Any]) -> Any:
    """`function()`, with the project's own errors turned into one line and exit status 2."""
    try:
        return function()
    except SuiteError as error:
        print(f"{label}: " + " ".join(str(error).split()), file=sys.stderr)  # one line, whatever the message
        raise SystemExit(USER_ERROR) from None
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        print(f"{label}: {DiskFullError(Path(error.filename or '.'))}", file=sys.stderr)
        raise SystemExit(USER_ERROR) from None
    except KeyboardInterrupt:
        print(f"{label}: interrupted; finished work is kept, re-run to continue", file=sys.stderr)
        raise SystemExit(130) from None


def _one_run_at_a_time(folder: Path, label: str) -> contextlib.AbstractContextManager:
    """The stage's lock; under torchrun only the first process takes it, for the whole group."""
    return stage_lock(folder, label) if os.environ.get("RANK", "0") == "0" else contextlib.nullcontext()


def main(run: Callable[..., Any], name: str, doc: str | None, *, item: str | None = None,
         choices: Sequence[str] | None = None, argv: list[str] | None = None, layout: Layout = Layout(),
         lock_folder: Callable[[Layout, str | None], Path] | None = None) -> Any:
    """Parse `argv`, load params.yaml from `layout` and call `run`; see the module doc."""
    pipelines.started()
    parser = argparse.ArgumentParser(prog=f"python -m pipelines.{name}", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    if item is not None:
        parser.add_argument(item, choices=choices)
    args = parser.parse_args(argv)
    value = getattr(args, item) if item is not None else None
    label = name if value is None else f"{name}@{value}"

    def call() -> Any:
        with _one_run_at_a_time(lock_folder(layout, value) if lock_folder else layout.root, label):
            params = config.load(layout.params_file)
            return run(params, layout) if value is None else run(params, layout, value)

    return guarded(label, call)
