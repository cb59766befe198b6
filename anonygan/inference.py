"""Anonymise prepared faces with a trained AnonyGAN checkpoint: numpy in, numpy out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import runtime
from anonygan.config import InferenceConfig, ModelConfig
from anonygan.data import NetworkInputs, to_uint8
from anonygan.model import Generator, composite, load_checkpoint
from infra.errors import DataError


class AnonyGANInference:
    """The generator of a checkpoint in eval mode, batched, on CUDA (channels-last) when present."""

    def __init__(self, generator: Generator, config: InferenceConfig = InferenceConfig(),
                 device: torch.device | None = None, batch_size: int = 32):
        self.device = device or runtime.default_device()
        self.config = config
        self.memory_format = runtime.memory_format(self.device)
        self.generator = generator.to(self.device, memory_format=self.memory_format).eval()
        self.landmark_indices = generator.config.landmark_indices
        self.batch_size = batch_size
        self.autocast = runtime.autocast(self.device, config.precision)

    @classmethod
    def from_checkpoint(cls, path: str | Path, config: InferenceConfig = InferenceConfig(),
                        device: torch.device | str | None = None, batch_size: int = 32) -> AnonyGANInference:
        """Load `models/<method>/checkpoint.pt` (written by `anonygan.training.Trainer`)."""
        state = load_checkpoint(Path(path))
        generator = Generator(ModelConfig(**state["model_config"]))
        generator.load_state_dict(state["modules"]["generator"])
        return cls(generator, config, torch.device(device) if device is not None else None, batch_size)

    @torch.no_grad()
    def anonymise(self, source: np.ndarray, source_landmarks: np.ndarray, source_mask: np.ndarray,
                  condition: np.ndarray, condition_landmarks: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 faces with the appearance of `condition` and the pose of `source`.

        source, condition: (N, H, W, 3) uint8 crops in the canonical frame; *_landmarks: (N, 68, 2)
        crop coordinates; source_mask: (N, H, W) bool.
        """
        n, height, width = _check(source, source_landmarks, source_mask, condition, condition_landmarks)
        out = np.empty((n, height, width, 3), dtype=np.uint8)
        for start in range(0, n, self.batch_size):
            part = slice(start, start + self.batch_size)
            batch = {"source": source[part], "mask": source_mask[part], "condition": condition[part],
                     "source_landmarks": source_landmarks[part],
                     "condition_landmarks": condition_landmarks[part]}
            batch = {key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in batch.items()}
            batch["same_image"] = torch.zeros(len(batch["source"]), dtype=torch.bool)
            x = NetworkInputs.build(batch, self.landmark_indices, self.device, self.memory_format)
            with self.autocast:
                generated = self.generator(x.condition, x.context, x.condition_maps, x.source_maps)
            if not torch.isfinite(generated).all():
                raise DataError(f"the generator produced non-finite pixels for faces {start}.."
                                 f"{start + len(generated) - 1}: the checkpoint is untrained or broken")
            if self.config.output == "composited":
                generated = composite(generated.float(), x.source, x.mask)
            out[part] = to_uint8(generated, self.config.quantise)
        return out


def _check(source, source_landmarks, source_mask, condition, condition_landmarks) -> tuple[int, int, int]:
    """(N, H, W) after checking every array's shape and dtype, with an error naming the array."""
    if source.ndim != 4 or source.shape[-1] != 3:
        raise ValueError(f"source must be (N, H, W, 3) uint8; got shape {source.shape}")
    n, height, width, _ = source.shape
    if height % 4 or width % 4:
        raise ValueError(f"crop size {height}x{width} must be divisible by 4 (two stride-2 levels)")
    expected = {
        "source": ((n, height, width, 3), np.uint8, source),
        "condition": ((n, height, width, 3), np.uint8, condition),
        "source_mask": ((n, height, width), np.bool_, source_mask),
        "source_landmarks": ((n, 68, 2), None, source_landmarks),
        "condition_landmarks": ((n, 68, 2), None, condition_landmarks),
    }
    for name, (shape, dtype, array) in expected.items():
        if array.shape != shape or (dtype is not None and array.dtype != dtype):
            raise ValueError(f"{name} must be {shape} {np.dtype(dtype or np.float32).name}; "
                             f"got {array.shape} {array.dtype}")
    return n, height, width
