"""An append-only journal of finished rows, folded into one table when a run completes.

A long stage writes one row per item into a table (e.g. `index.parquet`). Rows are appended as
they finish, one Parquet part per batch, each written atomically into `journal/` beside the
table; `fold` writes the table and deletes the parts. A killed run keeps every part it wrote, and
the next run reads them back together with the table's rows (`rows`), so only unfinished work
is done again.

Every row is sealed with a SHA-256 over its values (column `row_sha256`, in the parts and in the
table); a row read back whose values do not match it (a part or table rewritten as valid
Parquet with other values, a row without a digest) is dropped with one line, and so done again.
Beyond that the journal vouches for nothing: a caller checks each row against what produced it
(photo, settings, files) before reusing it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow
from tqdm import tqdm

from infra.atomic import write_table

#: The column holding each row's digest.
ROW_DIGEST = "row_sha256"


class Journal:
    def __init__(self, table: Path):
        self.table = Path(table)
        self.folder = self.table.parent / "journal"
        parts = self.parts()
        self._next = int(parts[-1].stem.split("-")[1]) + 1 if parts else 0

    def parts(self) -> list[Path]:
        """The part files, oldest first."""
        return sorted(self.folder.glob("part-*.parquet")) if self.folder.is_dir() else []

    def rows(self) -> tuple[list[dict], list[dict]]:
        """(the table's rows, the parts' rows oldest first). An unreadable file is reported and skipped."""
        table = _read(self.table) if self.table.is_file() else []
        return table, [row for part in self.parts() for row in _read(part)]

    def append(self, rows: list[dict]) -> None:
        """Write `rows` as a new part (nothing for no rows)."""
        if rows:
            sealed = [{**row, ROW_DIGEST: row_digest(row)} for row in rows]
            write_table(self.folder / f"part-{self._next:06d}.parquet", pd.DataFrame(sealed))
            self._next += 1

    def restart(self, rows: list[dict]) -> None:
        """Replace every part by one holding `rows`, so the parts of killed runs do not pile up."""
        stale = self.parts()
        self.append(rows)
        for part in stale:
            part.unlink()

    def fold(self, table: pd.DataFrame) -> None:
        """Write the final table (each row sealed with its digest), then delete the parts it supersedes."""
        rows = table.drop(columns=ROW_DIGEST, errors="ignore")
        write_table(self.table, rows.assign(**{ROW_DIGEST: [row_digest(row) for row in _records(rows)]}))
        for part in self.parts():
            part.unlink()
        if self.folder.is_dir() and not any(self.folder.iterdir()):
            os.rmdir(self.folder)


def row_digest(row: dict[str, Any]) -> str:
    """SHA-256 over a row's values (its digest column aside), the same before and after a Parquet round trip."""
    values = {key: _canonical(value) for key, value in row.items() if key != ROW_DIGEST}
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def _canonical(value: Any) -> Any:
    """Plain JSON data: arrays as lists, every number as a float (Parquet turns ints of a column with gaps
    into floats), NaN as None (the gaps of a column)."""
    if isinstance(value, np.ndarray | list | tuple):
        return [_canonical(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return None if math.isnan(value) else float(value)
    return str(value)


def _records(frame: pd.DataFrame) -> list[dict]:
    return [{key: value.tolist() if isinstance(value, np.ndarray) else value for key, value in row.items()}
            for row in frame.to_dict("records")]


def _read(path: Path) -> list[dict]:
    """The rows of a part or table whose values match their digest, without it."""
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError, pyarrow.ArrowException) as error:
        tqdm.write(f"ignoring unreadable {path} ({type(error).__name__}): its rows are done again")
        return []
    rows = _records(frame)
    kept = [row for row in rows if row.get(ROW_DIGEST) == row_digest(row)]
    if len(kept) < len(rows):
        tqdm.write(f"ignoring {len(rows) - len(kept)} of the {len(rows)} rows of {path}: their values do not match "
                   "their digest (changed after they were written); they are done again")
    return [{key: value for key, value in row.items() if key != ROW_DIGEST} for row in kept]
