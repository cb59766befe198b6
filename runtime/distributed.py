"""Several processes (a `torchrun` launch) sharing one run: the process group and gradient sums.

`process_group` joins torchrun's processes (NCCL on CUDA, gloo on CPU); gradients are summed over
them in one all-reduce (`sum_gradients`); one process needs no group and every call is a no-op.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator

import torch
import torch.distributed as dist

from runtime.device import default_device


def world() -> tuple[int, int]:
    """(rank of this process, number of processes) of the process group; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def launched_processes() -> int:
    """How many processes torchrun started for this run (its WORLD_SIZE); 1 without torchrun."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@contextlib.contextmanager
def process_group() -> Iterator[torch.device]:
    """The device of this process, inside torchrun's process group when it started several.

    CUDA processes use NCCL and GPU LOCAL_RANK; CPU processes use gloo. One process needs no group.
    """
    if launched_processes() == 1:
        yield default_device()
        return
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield device
    finally:
        dist.destroy_process_group()


def sum_over_processes(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` summed over the processes, in place; unchanged in one process."""
    if world()[1] > 1:
        dist.all_reduce(tensor)
    return tensor


def sum_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Each gradient summed over the processes in one all-reduce (missing gradients count as 0)."""
    if world()[1] == 1:
        return
    parameters = list(parameters)
    for parameter in parameters:
        if parameter.grad is None:
            parameter.grad = torch.zeros_like(parameter)
    gradients = [parameter.grad for parameter in parameters]
    flat = sum_over_processes(torch.cat([gradient.reshape(-1) for gradient in gradients]))
    for gradient, summed in zip(gradients, flat.split([g.numel() for g in gradients]), strict=True):
        gradient.copy_(summed.view_as(gradient))


def barrier() -> None:
    """Wait for every process (no-op in one process)."""
    if world()[1] > 1:
        dist.barrier()
