"""Device and precision: where tensors live, bf16 autocast, one optimiser update, frozen modules."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

PRECISIONS = ("fp32", "bf16")


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def memory_format(device: torch.device) -> torch.memory_format:
    """Channels-last on CUDA (tensor cores), contiguous on CPU."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when `precision` is bf16; fp32 (no autocast) otherwise and on CPU."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}; got {precision!r}")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda" and precision == "bf16")


def update(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One optimiser step on `loss`: clear gradients, backpropagate, step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


@contextlib.contextmanager
def frozen(*modules: torch.nn.Module) -> Iterator[None]:
    """No parameter gradients for `modules` inside the block; gradients still flow through them."""
    states = [[p.requires_grad for p in module.parameters()] for module in modules]
    for module in modules:
        module.requires_grad_(False)
    try:
        yield
    finally:
        for module, flags in zip(modules, states, strict=True):
            for parameter, flag in zip(module.parameters(), flags, strict=True):
                parameter.requires_grad_(flag)
