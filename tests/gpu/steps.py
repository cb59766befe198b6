"""Training steps the gpu lane compares; run under torchrun it is the worker of the NCCL test:

    python -m torch.distributed.run --standalone --nproc_per_node 1 tests/gpu/steps.py OUT.pt
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist

from acceptance.faces import REPO, faces_root, hybrid_rows, pair_data, training_batch
from anonygan.config import ModelConfig, TrainConfig
from anonygan.data import PairData
from anonygan.training import Trainer
from pipelines import config

VARIANTS = ("anonygan-plain-68", "anonygan-plain-29", "anonygan-la-68", "anonygan-68")
#: Full-size steps at a small batch: the lane checks that the code runs and agrees; the benchmark measures 2 x 32.
BATCH = 4
#: The dropout masks of the NCCL comparison's two micro-batches.
SEEDS = (11, 12)


def variant(name: str, **train) -> tuple[ModelConfig, TrainConfig]:
    """params.yaml's variant at full size, trained with micro-batches of BATCH (overridable)."""
    model, defaults = config.load(REPO / "params.yaml").variant(name)
    settings = {"context_matching": defaults.context_matching, "batch_size": BATCH, "batches_per_step": 1,
                "samples_per_epoch": BATCH, "epochs": 1, "workers": 0, **train}
    return model, TrainConfig(**settings)


def one_step(trainer: Trainer, pairs: PairData, batches: int = 1, seeds=None) -> dict[str, float]:
    """One optimiser step on fixed hybrid micro-batches of the carried faces; the losses as floats."""
    inputs = [trainer.inputs(training_batch(pairs, hybrid_rows(pairs, trainer.config.batch_size, offset=k)))
              for k in range(batches)]
    return {name: value.item() for name, value in trainer.step(inputs, seeds).items()}


@contextlib.contextmanager
def exact_fp32() -> Iterator[None]:
    """fp32 as on the CPU: no TF32 in matrix products or convolutions, deterministic kernels where PyTorch has them.

    PyTorch has no deterministic CUDA kernel for some backward passes (reflection padding's among them):
    those warn instead of failing, which is why CPU-CUDA comparisons keep a tolerance.
    """
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.benchmark, torch.are_deterministic_algorithms_enabled())
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark,
         deterministic) = saved
        torch.use_deterministic_algorithms(deterministic)


def distributed_step(out: Path) -> None:
    """In torchrun's NCCL process group: one step of anonygan-68 with 2 micro-batches; losses and gradients to `out`."""
    device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    torch.cuda.set_device(device)
    dist.init_process_group("nccl")
    try:
        check = torch.ones(1, device=device)
        dist.all_reduce(check)  # the trainer skips its all-reduces in one process: show that NCCL itself works
        model, train = variant("anonygan-68", batches_per_step=2, samples_per_epoch=2 * BATCH)
        pairs = pair_data(faces_root())
        with exact_fp32():
            trainer = Trainer(model, train, pairs, out.with_suffix(".checkpoint.pt"), device=device)
            losses = one_step(trainer, pairs, batches=2, seeds=SEEDS)
        torch.save({"backend": dist.get_backend(), "all_reduce": check.item(), "losses": losses,
                    "gradients": {key: p.grad.cpu() for key, p in trainer.generator.named_parameters()}}, out)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    distributed_step(Path(sys.argv[1]))
