"""Where the pipeline's files live: one object owns every path that dvc.yaml declares.

Stages and tests build paths only through a `Layout`; `Layout(root)` is the same layout inside
another folder (a test's copy of the repository). dvc.yaml spells the same paths for DVC.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from infra.atomic import remove_inside
from infra.errors import MissingInputError


@dataclass(frozen=True)
class Layout:
    root: Path = Path(".")

    @property
    def params_file(self) -> Path:
        return self.root / "params.yaml"

    def path(self, user_path: str | Path) -> Path:
        """A path from params.yaml: relative ones are relative to the repository root."""
        path = Path(user_path).expanduser()
        return path if path.is_absolute() else self.root / path

    # -- data --------------------------------------------------------------------------------
    def raw(self, dataset: str) -> Path:
        return self.root / "data" / "raw" / dataset

    def source(self, dataset: str) -> Path:
        """download@<dataset>'s record of where the images and protocol files are."""
        return self.raw(dataset) / "source.json"

    def prepared(self, dataset: str) -> Path:
        return self.root / "data" / "prepared" / dataset

    def framed(self, dataset: str, frame: str) -> Path:
        """The prepared faces in `frame`: `crop`, prepare's canonical crops; `photo`, photo-frame's 256x256 photos."""
        return self.prepared(dataset) if frame == "crop" else self.root / "data" / "prepared" / f"{dataset}-{frame}"

    @property
    def pairs(self) -> Path:
        return self.root / "data" / "pairs"

    @property
    def train_pairs(self) -> Path:
        return self.pairs / "celeba_train.csv"

    def test_pairs(self, dataset: str) -> Path:
        return self.pairs / f"{dataset}_test.csv"

    # -- models ------------------------------------------------------------------------------
    def checkpoint(self, method: str) -> Path:
        return self.root / "models" / method / "checkpoint.pt"

    def released(self, method: str) -> Path:
        """download-released@<method>'s folder: the authors' released file and its status.json."""
        return self.root / "models" / method

    def live(self, method: str) -> Path:
        """DVCLive's folder of a trained method."""
        return self.root / "dvclive" / method

    # -- outputs, results, reports -------------------------------------------------------------
    @property
    def outputs_root(self) -> Path:
        return self.root / "outputs"

    def outputs(self, dataset: str, method: str) -> Path:
        return self.outputs_root / dataset / method

    @property
    def results_root(self) -> Path:
        return self.root / "results"

    def results(self, dataset: str, method: str) -> Path:
        return self.results_root / dataset / f"{method}.json"

    def pair_results(self, dataset: str, method: str) -> Path:
        return self.results_root / dataset / f"{method}.pairs.csv"

    def features(self, dataset: str, method: str) -> Path:
        """The Inception features FID and KID were computed from (metrics.fid.FeatureSets), for comparisons."""
        return self.results_root / dataset / f"{method}.features.npz"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def paper_numbers(self) -> Path:
        return self.reports / "paper_numbers.yaml"

    @property
    def live_root(self) -> Path:
        return self.root / "dvclive"

    # -- what stages may delete -----------------------------------------------------------------
    @property
    def owned(self) -> tuple[Path, ...]:
        """The folders stages write into: nothing outside them is ever deleted or replaced."""
        return (self.root / "data", self.root / "models", self.outputs_root, self.results_root, self.reports,
                self.live_root)

    def remove(self, path: Path) -> None:
        """Delete `path` (a file or a folder tree) strictly inside `owned`; an OutsideError, deleting nothing, else."""
        remove_inside(path, self.owned)


def require(path: Path, stage: str) -> Path:
    """`path` if it exists, else a MissingInputError saying which stage makes it."""
    if not path.exists():
        raise MissingInputError(f"{path} not found: run `dvc repro {stage}` first")
    return path
