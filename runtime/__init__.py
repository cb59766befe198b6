"""The torch runtime shared by trainers, inference and metrics.

    runtime.device         where tensors live, bf16 autocast, one optimiser update, frozen modules
    runtime.distributed    torchrun's process group and gradient sums
    runtime.checkpoints    reading the suite's training checkpoints back
    runtime.trainer        `EpochTrainer`: checkpoints, resume, finiteness checks, DVCLive
    runtime.torchvision_compat   torchvision importable on a CPU-only torch

`import runtime` gives the names the trainers and anonymisers call (`runtime.autocast`, ...).
"""

from runtime.checkpoints import comparable, load_checkpoint
from runtime.device import PRECISIONS, autocast, default_device, frozen, memory_format, update
from runtime.distributed import barrier, launched_processes, process_group, sum_gradients, sum_over_processes, world
from runtime.trainer import EpochTrainer, NonFiniteLossError

__all__ = ["PRECISIONS", "EpochTrainer", "NonFiniteLossError", "autocast", "barrier", "comparable", "default_device",
           "frozen", "launched_processes", "load_checkpoint", "memory_format", "process_group", "sum_gradients",
           "sum_over_processes", "update", "world"]
