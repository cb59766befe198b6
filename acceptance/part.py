"""One measured part of the acceptance run, in its own process: `python -m acceptance.part NAME --budget S --out F`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from acceptance import benchmarks

MEASUREMENTS = {
    "train-fp32": lambda tiny, seconds: benchmarks.training_step("fp32", tiny, seconds),
    "train-bf16": lambda tiny, seconds: benchmarks.training_step("bf16", tiny, seconds),
    "metrics": benchmarks.metric_networks,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name", choices=sorted(MEASUREMENTS))
    parser.add_argument("--budget", type=float, required=True, help="seconds the measurement may take")
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the result")
    parser.add_argument("--tiny", action="store_true", help="the small profile's sizes, for a CPU")
    args = parser.parse_args(argv)
    args.out.write_text(json.dumps(MEASUREMENTS[args.name](args.tiny, args.budget), indent=2))


if __name__ == "__main__":
    main()
