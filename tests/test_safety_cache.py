"""Cached arrays cannot lie: values changed after writing, a truncated file or a wrong row count are recomputed,
with one line naming the file and why. The hostile caches are written here: features scaled by 1.5 (what moved
CelebA's FID from 150 to 288), a flipped "detected" flag, a truncated file, a file that is not an array at all.
"""

from __future__ import annotations

import numpy as np
import pytest

from metrics.store import array_digest, cached_features

DIGESTS = ["a", "b", "c"]


@pytest.fixture()
def cache(tmp_path):
    """A cache holding the true features of DIGESTS; returns (cache folder, true features, how often computed)."""
    truth = np.array([[0.5, 1.0], [2.0, 3.0], [4.0, 5.0]], np.float32)
    calls = []

    def compute():
        calls.append(1)
        return truth

    def features():
        return cached_features(tmp_path, "inception", 1, DIGESTS, compute)

    assert np.array_equal(features(), truth) and np.array_equal(features(), truth) and len(calls) == 1
    path, = tmp_path.glob("inception-v1/*.npz")
    return path, truth, calls, features


def rewrite(path, **arrays):
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


def test_scaled_features_are_recomputed_with_one_line(cache, capsys):
    path, truth, calls, features = cache
    with np.load(path) as stored:
        recorded = str(stored["sha256"])
    rewrite(path, features=truth * 1.5, sha256=np.array(recorded))  # the old digest kept: the values lie
    assert np.array_equal(features(), truth) and len(calls) == 2
    assert capsys.readouterr().out.splitlines() == [
        f"recomputing {path}: its values do not match the SHA-256 stored with them (changed after it was written)"]
    assert np.array_equal(features(), truth) and len(calls) == 2  # the rewritten cache is trusted again


def test_a_flipped_flag_is_caught_by_the_digest(tmp_path, capsys):
    detected = np.array([True, False, True])
    calls = []

    def compute():
        calls.append(1)
        return detected

    cached_features(tmp_path, "dlib", 1, DIGESTS, compute)
    path, = tmp_path.glob("dlib-v1/*.npz")
    with np.load(path) as stored:
        recorded = str(stored["sha256"])
    rewrite(path, features=np.array([True, True, True]), sha256=np.array(recorded))
    assert cached_features(tmp_path, "dlib", 1, DIGESTS, compute).tolist() == [True, False, True]
    assert len(calls) == 2 and "values do not match the SHA-256" in capsys.readouterr().out


@pytest.mark.parametrize("damage", ["truncated", "not an array", "no digest", "rows"])
def test_unreadable_or_incomplete_caches_are_recomputed_never_a_traceback(cache, damage, capsys):
    path, truth, calls, features = cache
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "not an array":
        path.write_bytes(b"GIF89a")
    elif damage == "no digest":
        rewrite(path, features=truth)
    else:
        rewrite(path, features=truth[:2], sha256=np.array(array_digest(truth[:2])))
    assert np.array_equal(features(), truth) and len(calls) == 2
    line, = capsys.readouterr().out.splitlines()
    expected = {"truncated": "unreadable (", "not an array": "unreadable (", "no digest": "unreadable (KeyError",
                "rows": "it has 2 rows for 3 images"}[damage]
    assert line.startswith(f"recomputing {path}: {expected}")
