"""One module per DVC stage, run as `python -m pipelines.<stage>`; `pipelines.stage` is their entry point.

A stage's imports (torch, dlib, ...) take seconds, and a Ctrl-C during them must stop it at once
and in one line, as it does later. So when this package is imported to run a module (`-m`), its
first instruction installs a SIGINT handler that ends the process at once (nothing has been
written yet); `started()`, called by the module's entry point, brings back the usual
KeyboardInterrupt, which the stage turns into its own one line.
"""

import os
import signal
import sys


def _interrupted_during_start_up(signum: int, frame: object) -> None:
    os.write(2, b"pipelines: interrupted during start-up; nothing was done\n")
    os._exit(130)


def started() -> None:
    """The module's code runs: a Ctrl-C is a KeyboardInterrupt again."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


if sys.argv[:1] == ["-m"]:  # Python is locating the module `-m` names: a stage is starting
    signal.signal(signal.SIGINT, _interrupted_during_start_up)
