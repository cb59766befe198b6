"""FID and KID on pytorch-fid's Inception pool3 features (2048-d).

Resize modes (SPEC 5):
- `clean`: each channel resized to 299x299 as float by PIL's bicubic filter, no
  re-quantisation (clean-fid's default, which the authors' script used);
- `legacy_pytorch`: pytorch-fid's own bilinear `F.interpolate` inside the network.

The real set is the prepared crops of every test source photo of the dataset, fixed per
dataset whatever a method skipped; its features are cached by content (see metrics.store)
and serve every method. Inception runs in float32 on every device: FID is sensitive to
feature precision, so no autocast.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
from PIL import Image

from facedata.compat import ensure_torchvision
from facedata.config import at_least
from facedata.images import read_rgb
from metrics import weights
from metrics.registry import MetricInputs, register
from metrics.store import cached_features, content_digest

Resize = Literal["clean", "legacy_pytorch"]
RESIZE_MODES = typing.get_args(Resize)
INCEPTION_SIZE = 299
FEATURES = 2048


def clean_resize(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (299, 299, 3) float32 in [0, 255]: PIL bicubic per channel on float values."""
    channels = [Image.fromarray(rgb[:, :, c].astype(np.float32), mode="F")
                .resize((INCEPTION_SIZE, INCEPTION_SIZE), Image.Resampling.BICUBIC) for c in range(3)]
    return np.clip(np.stack([np.asarray(c) for c in channels], axis=2), 0.0, 255.0)


class InceptionFeatures:
    """Pool3 features of image files, batched, on CUDA when available."""

    def __init__(self, resize: str, device: torch.device, batch_size: int):
        if resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")
        # pytorch-fid loads its weights from the torch hub cache: resolve() puts a verified copy there.
        weights.resolve("inception")
        ensure_torchvision()
        from pytorch_fid.inception import InceptionV3

        self.resize, self.device, self.batch_size = resize, device, batch_size
        model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[FEATURES]],
                            resize_input=resize == "legacy_pytorch", normalize_input=True)
        self.model = model.eval().to(device, memory_format=torch.channels_last)

    @property
    def name(self) -> str:
        """Cache namespace: the weights' digest and the resize mode decide the features."""
        return f"inception-{weights.PRETRAINED['inception'].sha256[:16]}-{self.resize}"

    def _batches(self, paths: list[Path]) -> Iterator[torch.Tensor]:
        for start in range(0, len(paths), self.batch_size):
            images = [read_rgb(path) for path in paths[start:start + self.batch_size]]
            if self.resize == "clean":
                images = [clean_resize(image) for image in images]
            batch = torch.from_numpy(np.stack(images).astype(np.float32) / 255.0)
            yield batch.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def compute(self, paths: list[Path]) -> np.ndarray:
        """(N, 2048) float32 features of the image files."""
        features = [self.model(batch.to(self.device))[0].flatten(1).float().cpu() for batch in self._batches(paths)]
        return torch.cat(features).numpy() if features else np.zeros((0, FEATURES), np.float32)

    def __call__(self, paths: list[Path], cache: Path) -> np.ndarray:
        """`compute(paths)`, cached by the files' content."""
        return cached_features(cache, self.name, [content_digest(p) for p in paths], lambda: self.compute(paths))


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^1/2), in float64.

    tr((S1 S2)^1/2) is the sum of the square roots of the eigenvalues of S1^1/2 S2 S1^1/2, a
    symmetric PSD matrix, so symmetric eigensolvers suffice. Eigenvalues below rounding level
    count as zero: rank-deficient covariances (fewer images than features) then need no
    regularising offset, and identical sets give 0 to machine precision.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    values, vectors = np.linalg.eigh(sigma1)
    sqrt_sigma1 = (vectors * np.sqrt(_above_rounding(values))) @ vectors.T
    product = sqrt_sigma1 @ sigma2 @ sqrt_sigma1
    trace_sqrt = np.sqrt(_above_rounding(np.linalg.eigvalsh((product + product.T) / 2))).sum()
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)


def _above_rounding(values: np.ndarray) -> np.ndarray:
    """Eigenvalues with those indistinguishable from zero (and negative ones) set to 0."""
    cutoff = np.abs(values).max(initial=0.0) * len(values) * np.finfo(np.float64).eps
    return np.where(values > cutoff, values, 0.0)


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (N-1)-normalised covariance, float64."""
    features = np.asarray(features, np.float64)
    if len(features) < 2:
        raise ValueError(f"FID needs at least 2 images per set, got {len(features)}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def kernel_inception_distance(real: np.ndarray, fake: np.ndarray, *, subsets: int, subset_size: int,
                              seed: int) -> tuple[float, float, int]:
    """Unbiased MMD^2 with the cubic polynomial kernel (x.y/d + 1)^3, over seeded random subsets.

    The subset size shrinks to the smaller set when either has fewer images. Returns
    (mean, std over subsets, subset size used).
    """
    size = min(subset_size, len(real), len(fake))
    if size < 2:
        raise ValueError(f"KID needs at least 2 images per set, got {len(real)} real and {len(fake)} anonymised")
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    dims = real.shape[1]
    rng = np.random.default_rng(seed)
    estimates = []
    for _ in range(subsets):
        x = real[rng.choice(len(real), size, replace=False)]
        y = fake[rng.choice(len(fake), size, replace=False)]
        kxx, kyy, kxy = ((a @ b.T / dims + 1.0) ** 3 for a, b in ((x, x), (y, y), (x, y)))
        within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (size * (size - 1))
        estimates.append(within - 2.0 * kxy.mean())
    return float(np.mean(estimates)), float(np.std(estimates)), size


def _feature_sets(inputs: MetricInputs, resize: str) -> tuple[np.ndarray, np.ndarray, dict]:
    rows, skipped = inputs.evaluable()
    extractor = InceptionFeatures(resize, inputs.torch_device, inputs.batch_size)
    real_paths = [inputs.pairs.crop_path(key) for key in inputs.pairs.prepared_keys("source")]
    real = extractor(real_paths, inputs.cache)
    fake = extractor([inputs.image_path(pair_id) for pair_id in rows["pair_id"]], inputs.cache)
    return real, fake, {"n": len(fake), "n_real": len(real), "skipped": skipped}


@register
def fid(inputs: MetricInputs, *, resize: Resize = "clean") -> dict:
    """Frechet Inception distance between the anonymised images and the dataset's real test crops."""
    real, fake, counts = _feature_sets(inputs, resize)
    return {"value": frechet_distance(*statistics(real), *statistics(fake)), **counts}


@register
def kid(inputs: MetricInputs, *, resize: Resize = "clean", subsets: Annotated[int, at_least(1)] = 100,
        subset_size: Annotated[int, at_least(2)] = 1000, seed: Annotated[int, at_least(0)] = 0) -> dict:
    """Kernel Inception distance (unbiased at small N), mean and std over seeded subsets."""
    real, fake, counts = _feature_sets(inputs, resize)
    mean, std, size = kernel_inception_distance(real, fake, subsets=subsets, subset_size=subset_size, seed=seed)
    return {"value": mean, "std": std, "subset_size": size, **counts}
