"""The GPU acceptance run: one command that answers, within a device machine's short lease, what a CPU cannot.

    bash scripts/gpu-acceptance.sh OUT_DIR            # on the GPU machine (README, "The GPU acceptance run")
    bash scripts/gpu-acceptance.sh --tiny OUT_DIR     # the same run on a CPU at tiny size (tests)

It runs the `gpu` test lane (tests/gpu/), then benchmarks training steps and the metric networks,
each part in its own process under its own time budget, and writes OUT_DIR/summary.json and
OUT_DIR/summary.md. `python -m acceptance.carry` prepares here what the machine lacks: wheels of the
project's missing pure-Python dependencies, 64 real LFW faces and the key layout of the authors' released
AnonyGAN checkpoint, in the git-ignored folder `.gpu-carry/`.
"""
