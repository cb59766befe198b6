"""An append-only journal of finished rows, folded into one table when a run completes.

A long stage writes one row per item into a table (e.g. `index.parquet`). Rows are appended as
they finish, one Parquet part per batch, each written atomically into `journal/` beside the
table; `fold` writes the table and deletes the parts. A killed run keeps every part it wrote, and
the next run reads them back together with the table's rows (`rows`), so only unfinished work
is done again. The journal vouches for nothing: a caller checks each row against what produced
it before reusing it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow
from tqdm import tqdm

from infra.atomic import write_table


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
            write_table(self.folder / f"part-{self._next:06d}.parquet", pd.DataFrame(rows))
            self._next += 1

    def restart(self, rows: list[dict]) -> None:
        """Replace every part by one holding `rows`, so the parts of killed runs do not pile up."""
        stale = self.parts()
        self.append(rows)
        for part in stale:
            part.unlink()

    def fold(self, table: pd.DataFrame) -> None:
        """Write the final table, then delete the parts it supersedes."""
        write_table(self.table, table)
        for part in self.parts():
            part.unlink()
        if self.folder.is_dir() and not any(self.folder.iterdir()):
            os.rmdir(self.folder)


def _read(path: Path) -> list[dict]:
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError, pyarrow.ArrowException) as error:
        tqdm.write(f"ignoring unreadable {path} ({type(error).__name__}): its rows are done again")
        return []
    return [{key: value.tolist() if isinstance(value, np.ndarray) else value for key, value in row.items()}
            for row in frame.to_dict("records")]
