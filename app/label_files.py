"""Label files: the target of rows that arrived earlier without it, keyed by the config's id column.

A file whose name matches ``[labels] pattern`` (any batch format) is a label
file. It goes through the same complete-file detection, hashing and ledger as
a batch, and is checked here: it must hold the id column and the target (other
columns are ignored), every row an id, and every id one label. A file that
labels one id twice with different values, or gives a class no model knows,
is quarantined with the reasons; nothing of it is used.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

import pandas as pd
import pyarrow as pa

from app.columns import category_texts
from app.config import Config
from app.ingest import FileSnapshot, read_checked
from app.readers import is_batch_name
from app.validation import InvalidBatch, clean_target

ID, LABEL = "id", "label"
SHOWN_IDS = 5  # a reason names this many ids at most


@dataclass
class LabelFile:
    """One validated label file: ``frame`` has one row per id (``id`` as text, ``label``), in file order."""

    name: str
    sha256: str
    frame: pd.DataFrame
    warnings: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return len(self.frame)


def is_label_file(name: str, config: Config) -> bool:
    """True for a file driftdeck reads whose name matches ``[labels] pattern`` (labels need an id column)."""
    return config.id_column is not None and is_batch_name(name) and fnmatchcase(name, config.labels.pattern)


def read_label_file(path: Path, config: Config, known_classes: Collection[str] = ()) -> tuple[FileSnapshot, LabelFile | InvalidBatch]:
    """Read, hash and check the label file at ``path`` (see :func:`app.ingest.read_checked` for what it raises)."""
    snapshot, outcome = read_checked(path, config, lambda table: check_labels(table, config, known_classes),
                                     (config.id_column,))
    if isinstance(outcome, InvalidBatch):
        return snapshot, outcome
    frame, warnings = outcome
    return snapshot, LabelFile(path.name, snapshot.sha256, frame, warnings)


def check_labels(table: pa.Table, config: Config, known_classes: Collection[str] = ()) -> tuple[pd.DataFrame, list[str]]:
    """The table's (id, label) rows and warnings; :class:`InvalidBatch` with every reason it cannot be used.

    ``known_classes``: the classes the models know (classification); a label
    outside them is refused, as a batch's labels would be held back.
    """
    id_column, target = config.id_column, config.target
    columns = list(table.column_names)
    missing = [column for column in (id_column, target) if column not in columns]
    if missing:
        raise InvalidBatch([f"a label file needs the id column {id_column!r} and the target {target!r};"
                            f" missing: {', '.join(map(repr, missing))}"])
    if table.num_rows == 0:
        raise InvalidBatch(["header only: the file has no rows"])
    warnings = []
    extra = [column for column in columns if column not in (id_column, target)]
    if extra:
        warnings.append(f"column(s) {', '.join(map(repr, extra[:10]))} ignored: a label file needs only the id and the target")
    frame = table.select([id_column, target]).to_pandas()
    reasons: list[str] = []
    ids = category_texts(frame[id_column])
    labels = clean_target(frame[target], config, reasons)
    if ids.isna().any():
        reasons.append(f"{int(ids.isna().sum())} row(s) without an id (the first is row {int(ids.isna().to_numpy().argmax()) + 1})")
    unlabelled = labels.isna() & ids.notna()
    if unlabelled.any():
        warnings.append(f"{int(unlabelled.sum())} row(s) without a label ignored")
    rows = pd.DataFrame({ID: ids, LABEL: labels})[ids.notna() & labels.notna()]
    rows = rows.drop_duplicates()  # one id labelled twice the same way is one label
    conflicting = rows[ID][rows[ID].duplicated()].unique()
    if len(conflicting):
        reasons.append(f"{len(conflicting)} id(s) labelled differently within the file, such as {_some(conflicting)}")
    if known_classes and config.task == "classification":
        unknown = sorted(set(rows[LABEL]) - set(map(str, known_classes)))
        if unknown:
            reasons.append(f"label(s) {_some(unknown)} are none of the known classes ({_some(sorted(known_classes))})")
    if reasons:
        raise InvalidBatch(reasons)
    return rows.reset_index(drop=True), warnings


def _some(values) -> str:
    values = list(values)
    shown = ", ".join(repr(str(value)) for value in values[:SHOWN_IDS])
    return shown + (f" and {len(values) - SHOWN_IDS} more" if len(values) > SHOWN_IDS else "")
