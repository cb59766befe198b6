"""What the stages hand each other, with one reader and one writer for each record.

Tables (pair manifests, the anonymise manifest, per-pair results) are `Table`s: named, typed
columns and unique pair ids; a CSV may hold more columns than the table names. JSON records (the
anonymise summary, the metric results, the released weights' status) are dataclasses. Every
write is atomic (infra.atomic) and checks the record first; every read checks it too, and a
malformed record is a DataError of one line naming the file and the column or field.

    pairs = TEST_PAIRS["lfw"].read(path)        # a DataFrame with the columns below, typed
    Results.read(path).metrics["fid"].value     # a dataclass
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from infra.atomic import write_json, write_table
from infra.errors import DataError


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


# --- tables ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    """A CSV table: what it is (for messages), its typed columns, and the column whose values are unique."""

    what: str
    columns: Mapping[str, type]  # int, float, bool or str
    unique: str = "pair_id"

    def read(self, path: str | Path) -> pd.DataFrame:
        path = Path(path)
        text_columns = [name for name, kind in self.columns.items() if kind is str]
        try:
            # Only empty cells are missing values: an identity or key spelled "NA" stays text.
            frame = pd.read_csv(path, dtype=dict.fromkeys(text_columns, str), keep_default_na=False, na_values=[""])
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as error:
            raise DataError(f"{path}: not a readable CSV {self.what} table ({_one_line(error)})") from None
        return self.check(frame, path)

    def write(self, path: str | Path, frame: pd.DataFrame) -> None:
        write_table(path, self.check(frame, path))

    def check(self, frame: pd.DataFrame, path: str | Path) -> pd.DataFrame:
        """`frame` if it has every column with its type and no repeated `unique` value; else a DataError."""
        for name, kind in self.columns.items():
            if name not in frame.columns:
                raise DataError(f"{path}: the {self.what} table has no column {name!r} (it has {list(frame.columns)})")
            if not _column_holds(frame[name], kind):
                raise DataError(f"{path}: column {name!r} of the {self.what} table must hold {_NAMES[kind]} values "
                                f"in every row")
        repeated = frame[self.unique][frame[self.unique].duplicated()]
        if len(repeated):
            raise DataError(f"{path}: column {self.unique!r} of the {self.what} table repeats {repeated.iloc[0]}")
        return frame


_NAMES = {int: "integer", float: "number", bool: "true/false", str: "text"}


def _column_holds(column: pd.Series, kind: type) -> bool:
    if kind is int:
        return pd.api.types.is_integer_dtype(column)
    if kind is bool:
        return pd.api.types.is_bool_dtype(column)
    if kind is float:
        return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
    return bool(column.map(lambda value: isinstance(value, str)).all())


_PAIR = {"pair_id": int, "source": str, "condition": str, "source_identity": str, "condition_identity": str}

#: data/pairs/celeba_train.csv: hybrid training pairs (same_image: the condition is the source photo itself).
TRAIN_PAIRS = Table("CelebA training pairs", {**_PAIR, "same_image": bool})
#: data/pairs/<dataset>_test.csv: the photo to anonymise (source), its condition photo, the source's prepare status;
#: LFW adds the fold (1-10), whether the pair is of one person, and the kept first photo.
TEST_PAIRS = {
    "celeba": Table("CelebA test pairs", {**_PAIR, "fold": int, "source_status": str}),
    "lfw": Table("LFW test pairs", {**_PAIR, "fold": int, "same": bool, "first": str, "first_identity": str,
                                    "first_status": str, "source_status": str}),
}
#: outputs/<dataset>/<method>/manifest.csv: each test pair's outcome ("ok", "skipped: <why>", "not available").
ANONYMISED = Table("anonymise manifest", {"pair_id": int, "source": str, "condition": str, "status": str})
#: results/<dataset>/<method>.pairs.csv: one row per test pair, a column per per-pair value the metrics report.
PAIR_RESULTS = Table("per-pair results", {"pair_id": int})


def pair_table(table: Table, index: pd.DataFrame, source: Iterable[str], condition: Iterable[str] | None = None,
               **columns: Iterable[Any]) -> pd.DataFrame:
    """A pair manifest of `table` for the given photos, checked: the builder of every hand-made manifest.

    Pairs are numbered from 0. `condition` defaults to the source itself. Each `<photo>_identity`
    and `<photo>_status` column is looked up in the prepared `index` (columns key, identity, status;
    a key it lacks is "missing"); `fold` defaults to 1. `columns` gives the other columns of `table`.
    """
    frame = pd.DataFrame({"source": list(source), **{name: list(values) for name, values in columns.items()}})
    frame["condition"] = frame["source"] if condition is None else list(condition)
    if "fold" in table.columns and "fold" not in frame:
        frame["fold"] = 1
    by_key = index.set_index("key")
    for photo in ("source", "condition", "first"):
        for attribute, missing in (("identity", None), ("status", "missing")):
            name = f"{photo}_{attribute}"
            if name in table.columns and name not in frame and photo in frame:
                frame[name] = frame[photo].map(by_key[attribute].astype(str)).fillna(missing)
    frame.insert(0, "pair_id", range(len(frame)))
    table.check(frame, "pair_table")
    return frame[[*table.columns, *(column for column in frame if column not in table.columns)]]


# --- JSON records ---------------------------------------------------------------------------------


def read_json_object(path: str | Path) -> dict[str, Any]:
    """The JSON object in `path`; a DataError naming the file when it is not JSON or not an object."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not valid JSON ({_one_line(error)})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: must hold a JSON object, not {type(data).__name__}")
    return data


def _holds(value: Any, kind: Any) -> bool:
    """Whether a JSON value fits a field annotation (int, float, str, bool, dict[...], list[...], X | None, Any)."""
    if kind is Any:
        return True
    if isinstance(kind, types.UnionType):
        return any(_holds(value, option) for option in typing.get_args(kind))
    if kind is type(None):
        return value is None
    origin = typing.get_origin(kind) or kind
    if origin is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if origin is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, origin)


def _load(cls: type, data: Mapping[str, Any], source: str | Path, prefix: str = "") -> Any:
    """An instance of dataclass `cls` from a JSON object; keys it does not name go to its `details` field.

    A missing field or a value of the wrong type is a DataError naming `source` and the field
    (`prefix` + name: `fid.n`).
    """
    hints = typing.get_type_hints(cls)
    values, details = {}, {}
    names = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in data.items():
        if key in names and key != "details":
            if not _holds(value, hints[key]):
                raise DataError(f"{source}: field {prefix}{key} must be {_describe(hints[key])}, not {value!r:.80}")
            values[key] = value
        else:
            details[key] = value
    for name, spec in names.items():
        required = spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING
        if required and name not in values:
            raise DataError(f"{source}: field {prefix}{name} is missing")
    if details and "details" not in names:
        raise DataError(f"{source}: field {prefix}{next(iter(details))} is unknown; the fields are {', '.join(names)}")
    return cls(**values, **({"details": details} if details else {}))


def _describe(kind: Any) -> str:
    if isinstance(kind, types.UnionType):
        return " or ".join(_describe(option) for option in typing.get_args(kind))
    if kind is type(None):
        return "null"
    origin = typing.get_origin(kind) or kind
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "an object",
            list: "a list"}.get(origin, str(kind))


def _dump(record: Any) -> dict[str, Any]:
    """A record's JSON object: its fields, `details` spread at the top level, unset optional fields left out."""
    data = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)
            if f.name != "details" and not (f.default is None and getattr(record, f.name) is None)}
    return {**data, **getattr(record, "details", {})}


@dataclass(frozen=True)
class AnonymiseSummary:
    """outputs/<dataset>/<method>/summary.json: what `anonymise@<method>` did for one dataset.

    `not_available`: why the method could not run (its released weights were not obtained); then no pair has an image.
    """

    dataset: str
    method: str
    pairs: int
    anonymised: int
    skipped: int
    seconds: float
    not_available: str | None = None
    frame: str = "crop"  # evaluate.lfw_frame on LFW: the frame of the images (crop | photo)
    image_format: str = "png"  # anonymise.image_format: how the images are stored (png | jpeg75)

    @classmethod
    def read(cls, path: str | Path) -> AnonymiseSummary:
        return _load(cls, read_json_object(path), path)

    def write(self, path: str | Path) -> None:
        write_json(path, _dump(self))


#: The key of results/<dataset>/<method>.json that marks a method that could not run.
NOT_AVAILABLE = "not_available"
#: The key of results/<dataset>/<method>.json that counts the test set's pairs.
TEST_SET = "test_set"


@dataclass(frozen=True)
class TestSet:
    """The test set a method was evaluated on: its pairs, and those no metric could use (by reason)."""

    __test__ = False  # not a pytest test class

    pairs: int
    n_skipped: int
    skipped: dict[str, int] = field(default_factory=dict)
    unit: str = "pair"  # LFW's evaluate.lfw_unit: what the image metrics counted (pair | second_photo)
    frame: str = "crop"  # LFW's evaluate.lfw_frame: what every metric read (crop | photo, the 256x256 photos)
    image_format: str = "png"  # anonymise.image_format of the anonymised images (png | jpeg75)


@dataclass(frozen=True)
class MetricResult:
    """One metric's result (metrics.calc): its value on `n` pairs or images, what it skipped and why, how it ran.

    `details` holds what the metric adds (std over folds, n_failed, the weights it used, ...).
    """

    metric: str
    value: float | None
    n: int
    n_skipped: int
    skipped: dict[str, int]
    options: dict[str, Any]
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, result: Mapping[str, Any]) -> MetricResult:
        """The record of a metrics.calc result; a NaN value is None, as the JSON file holds it."""
        value = result.get("value")
        finite = {**result, "value": None if isinstance(value, float) and math.isnan(value) else value}
        return _load(cls, finite, f"metric {result.get('metric')}")


@dataclass(frozen=True)
class MetricError:
    """A metric that was not computed: `error` says what is missing (pretrained weights) and what to do."""

    metric: str
    error: str


@dataclass(frozen=True)
class Results:
    """results/<dataset>/<method>.json: {"test_set": ..., "<metric>": result or error, ...}, or not_available.

    The file is also DVC's metrics file, so each metric stays a top-level key.
    """

    test_set: TestSet
    metrics: dict[str, MetricResult | MetricError] = field(default_factory=dict)
    not_available: str | None = None

    def value(self, metric: str) -> float:
        """The metric's value; NaN when it was not configured, not computed or has none."""
        result = self.metrics.get(metric)
        number = result.value if isinstance(result, MetricResult) else None
        return math.nan if number is None else float(number)

    def interval(self, metric: str) -> tuple[float, float]:
        """The metric's interval (low, high); NaNs when it has none."""
        result = self.metrics.get(metric)
        bounds = result.details.get("interval") if isinstance(result, MetricResult) else None
        return (math.nan, math.nan) if not bounds else (float(bounds["low"]), float(bounds["high"]))

    @classmethod
    def read(cls, path: str | Path) -> Results:
        data = read_json_object(path)
        if TEST_SET not in data:
            raise DataError(f"{path}: field {TEST_SET} is missing")
        test_set = _load(TestSet, _object(data.pop(TEST_SET), path, TEST_SET), path, f"{TEST_SET}.")
        not_available = None
        if NOT_AVAILABLE in data:
            entry = _object(data.pop(NOT_AVAILABLE), path, NOT_AVAILABLE)
            not_available = _load(_Reason, entry, path, f"{NOT_AVAILABLE}.").reason
        metrics = {name: _metric(_object(entry, path, name), path, name) for name, entry in data.items()}
        return cls(test_set, metrics, not_available)

    def write(self, path: str | Path) -> None:
        data: dict[str, Any] = {TEST_SET: _dump(self.test_set)}
        if self.not_available is not None:
            data[NOT_AVAILABLE] = {"reason": self.not_available}
        write_json(path, {**data, **{name: _dump(result) for name, result in self.metrics.items()}})


@dataclass(frozen=True)
class _Reason:
    reason: str


def _object(value: Any, path: str | Path, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DataError(f"{path}: field {name} must be an object, not {value!r}")
    return value


def _metric(entry: dict[str, Any], path: str | Path, name: str) -> MetricResult | MetricError:
    return _load(MetricError if "error" in entry else MetricResult, entry, path, f"{name}.")


# --- the released weights' status -----------------------------------------------------------------

#: The file in models/<method>/ where download-released@<method> records what it fetched.
STATUS = "status.json"


@dataclass(frozen=True)
class ReleaseStatus:
    """models/<method>/status.json: the authors' released file of `method`, and whether it can be used.

    Available: its size, SHA-256 (`sha256_pinned`: from params.yaml, else recorded at the first
    download) and in `details` what the model's check found in it (variant, notes, ...). Not
    available: `reason`.
    """

    method: str
    model: str
    file: str
    url: str
    available: bool
    sha256: str | None = None
    sha256_pinned: bool | None = None
    bytes: int | None = None
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, folder: str | Path) -> ReleaseStatus | None:
        """What download-released recorded in `folder`; None before its first run."""
        path = Path(folder) / STATUS
        return _load(cls, read_json_object(path), path) if path.is_file() else None

    def write(self, folder: str | Path) -> None:
        write_json(Path(folder) / STATUS, _dump(self))
