"""The engine's side of labels that come later: label files, batches awaiting labels, labels given up on.

:class:`LabelStage` owns what happens when

- a batch comes with unlabelled rows and an id column: its rows are archived
  and their ids recorded in the batch's own commit (:meth:`record`), where
  they meet any labels already waiting for them;
- a label file comes: it is joined by id in one transaction with its ledger
  entry (:meth:`take`), and every batch that got labels is scored again and,
  once labelled enough, trained on (:meth:`backfill`, through
  :meth:`app.engine.runner.ModelRunner.labels_came` and the committer);
- labels have waited longer than ``[labels] wait_seconds`` for their ids
  (:meth:`expire`): they are copied into the quarantine and reported;
- a batch could not be scored again (its archive or its snapshot unreadable
  for a while, the database busy) or the process died first: it is tried
  again between files, and at once at the next start (:meth:`retry_unscored`).

After each of these every model's state is brought up to date: its verdict
(the batches' results changed) and the ``label_lag`` flag.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Callable

import numpy as np

from app.columns import category_texts
from app.engine.commit import Committer
from app.engine.context import Stage, StageContext
from app.engine.records import BatchResult
from app.engine.runner import ModelRunner
from app.errorlog import log_error
from app.events import Event, EventKind
from app.fsutil import sha256_bytes
from app.ingest import FileSnapshot, quarantine
from app.label_files import LabelFile
from app.label_health import lag_flag
from app.label_ledger import (
    LabelJoin,
    apply_label_file,
    batch_labels,
    expire_waiting,
    label_lag,
    record_batch_ids,
    scored,
    unscored,
)
from app.store import FolderState, ModelState, StateLost
from app.validation import Batch

SHOWN = 5
RETRY_SECONDS = 1.0  # the wait before a failed re-score is tried again, doubled at each failure up to RETRY_MAX_SECONDS
RETRY_MAX_SECONDS = 3600.0


class LabelStage(Stage):
    """Joins label files to the batches they label and brings those batches' results up to date."""

    def __init__(self, context: StageContext, runners: dict[str, ModelRunner], committer: Committer) -> None:
        super().__init__(context)
        self.runners = runners
        self.committer = committer
        self._lagging = any(flag["kind"] == "label_lag" for name in runners  # told once each time it is raised
                            for flag in (self.store.model_state(name) or ModelState()).flags)
        self._retries: dict[int, tuple[int, float]] = {}  # file id: failures, and when to try again (monotonic)

    # --- batches -------------------------------------------------------------------

    def awaits(self, batch: Batch) -> bool:
        """Whether ``batch`` has rows without a label that a label file may give later (it has the id column)."""
        id_column, target = self.config.id_column, self.config.target
        if not id_column or not target or id_column not in batch.frame:
            return False
        return target not in batch.frame or bool(batch.frame[target].isna().any())

    def record(self, batch: Batch, joined: list[LabelJoin]) -> Callable[[Any, int], None]:
        """A writer for the batch's commit: its unlabelled rows' ids, and the labels that waited for them (into ``joined``)."""
        ids = category_texts(batch.frame[self.config.id_column])
        target = self.config.target
        labelled = batch.frame[target].notna().to_numpy() if target in batch.frame else np.zeros(batch.rows, bool)
        return lambda db, file_id: joined.append(record_batch_ids(db, file_id, ids, labelled))

    def after_batch(self, joined: list[LabelJoin]) -> None:
        """A batch committed: score it again if it met labels that waited for it; the lag may have grown."""
        if joined and joined[0].labelled:
            self._report(None, joined[0])
            self.backfill(sorted(joined[0].matched))
        if self.config.id_column:  # without one no label can come later: nothing lags, no result changed
            self.refresh_states()

    # --- label files ---------------------------------------------------------------

    def take(self, snapshot: FileSnapshot, labels: LabelFile) -> None:
        """Join a label file's labels to their batches, then bring those batches up to date."""
        for warning in labels.warnings:
            self.emit(Event(EventKind.FILE_SEEN, f"{labels.name}: {warning}", file=labels.name, data={"warning": warning}))
        with self.store.transaction() as db:
            file_id = self.store.record_file(labels.name, snapshot.sha256, "labels", rows=labels.rows, labeled=True,
                                             seen=snapshot.seen, db=db)
            join = apply_label_file(db, file_id, labels.frame, time.time())
        self._report(labels.name, join)
        self.backfill(sorted(join.matched))
        self.refresh_states()

    def backfill(self, file_ids: list[int]) -> None:
        """Score each batch of ``file_ids`` again with the labels it has now, for every model, and commit it.

        A batch that cannot be scored now stays in ``labels_unscored`` with an
        error event, and :meth:`retry_unscored` tries it again later.
        """
        coverage = batch_labels(self.store.read, file_ids)
        folder = self.store.folder_state()
        for file_id in file_ids:
            try:
                self._rescore(file_id, coverage[file_id].labels_from, folder)
            except StateLost:
                raise
            except Exception as error:  # noqa: BLE001 - kept for a later try, never lost
                self._failed(file_id, error)
            else:
                self._retries.pop(file_id, None)

    def retry_unscored(self) -> None:
        """Score again the batches that got labels and were not scored with them (a failure, or a process that
        died first), each once its wait since its last failure in this process is over."""
        now = time.monotonic()
        due = [file_id for file_id in unscored(self.store.read) if self._retries.get(file_id, (0, now))[1] <= now]
        if due:
            self.backfill(due)
            self.refresh_states()

    def _rescore(self, file_id: int, labels_from: list[str], folder: FolderState) -> None:
        record = self.store.file(file_id)
        frame = self.archive.read(record.sha256)  # with the labels it has now
        batch = Batch(name=record.name, sha256=record.sha256, frame=frame, labeled=True)
        stored = {model: BatchResult.from_dict(data) for _, model, data in self.store.results_of(file_id)}
        serving_before = {name: self.store.serving_version(name) for name in self.runners}
        outcomes = {name: runner.labels_came(batch, stored[name], folder, labels_from)
                    for name, runner in self.runners.items() if name in stored}
        self.committer.commit(None, None, outcomes, serving_before, file_id=file_id, with_entry=scored)
        self.archive.remember(file_id, frame)

    def _failed(self, file_id: int, error: Exception) -> None:
        """A re-score that raised: said once per failure, tried again after a wait that grows with each."""
        failures = self._retries.get(file_id, (0, 0.0))[0] + 1
        wait = min(RETRY_SECONDS * 2 ** (failures - 1), RETRY_MAX_SECONDS)
        self._retries[file_id] = (failures, time.monotonic() + wait)
        name = self.store.file(file_id).name
        log_error(self.paths.root, error, f"scoring {name} again with its labels")
        self.emit(Event(EventKind.ERROR, f"{name}: its labels came but it could not be scored again with them"
                        f" ({type(error).__name__}: {error}); tried again in {wait:g} s", file=name,
                        data={"where": "backfill", "failures": failures, "retry_seconds": wait}))

    # --- labels given up on --------------------------------------------------------

    def expire(self) -> None:
        """Report the labels that waited longer than ``[labels] wait_seconds`` for a batch with their ids."""
        wait = self.config.labels.wait_seconds
        now = time.time()
        if not self.store.read("SELECT 1 FROM labels_waiting WHERE since <= ? LIMIT 1", (now - wait,)):
            return  # the usual case, checked between files: no write transaction
        with self.store.transaction() as db:
            unmatched = expire_waiting(db, now, wait)
        for lost in unmatched:
            reason = (f"{len(lost.rows)} label(s) of {lost.label_file} whose ids no batch carried within"
                      f" {wait:g} s ([labels] wait_seconds): {lost.ids_text}")
            data = lost.rows.to_csv(index=False).encode()
            name = f"{lost.label_file}.unmatched.csv"
            placed = quarantine(FileSnapshot(name, len(data), 0, sha256_bytes(data), data), [reason], self.paths.quarantine)
            self.emit(Event(EventKind.LABELS_UNMATCHED, f"{reason} (see {placed.name} in the quarantine folder)",
                            file=lost.label_file, data={"rows": len(lost.rows), "ids": list(lost.rows["id"][:SHOWN])}))

    # --- reporting -----------------------------------------------------------------

    def refresh_states(self) -> None:
        """Every model's verdict from its results as they are now, and its ``label_lag`` flag (an event when raised)."""
        flag = lag_flag(label_lag(self.store.read, self.config.labels.labeled_share), self.config.labels.max_lag_batches)
        flagged = []
        for name, runner in self.runners.items():
            state = self.store.model_state(name)
            if state is None:
                continue
            flags = [f for f in state.flags if f["kind"] != "label_lag"] + ([flag] if flag else [])
            verdict = runner.assess.verdict().to_dict()
            if flags != state.flags or verdict != state.verdict:
                self.store.save_model_state(name, replace(state, flags=flags, verdict=verdict))
            flagged.append(name)
        if flag and flagged and not self._lagging:
            self.emit(Event(EventKind.FLAGGED, f"{', '.join(flagged)}: label_lag: {flag['detail']}",
                            data={"flags": [flag], "models": flagged}))
        self._lagging = flag is not None and bool(flagged)

    def _report(self, label_file: str | None, join: LabelJoin) -> None:
        coverage = batch_labels(self.store.read, sorted(join.matched))
        parts = [f"{join.labelled:,} label(s) for {len(join.matched)} batch(es)"]
        parts += [f"{labels.name} now {labels.coverage:.0%} labelled" for labels in coverage.values()][:SHOWN]
        if join.same:
            parts.append(f"{join.same:,} already labelled the same")
        if join.waiting:
            parts.append(f"{join.waiting:,} wait for a batch with their id")
        source = label_file or "labels that waited"
        self.emit(Event(EventKind.LABELS_INGESTED, f"{source}: {'; '.join(parts)}", file=label_file,
                        data={"labelled": join.labelled, "same": join.same, "waiting": join.waiting,
                              "conflicts": len(join.conflicts),
                              "coverage": {labels.name: labels.coverage for labels in coverage.values()}}))
        if join.conflicts:
            shown = "; ".join(f"id {c.id!r} of {c.batch}: kept {c.kept!r}, refused {c.refused!r}" for c in join.conflicts[:SHOWN])
            more = f" and {len(join.conflicts) - SHOWN} more" if len(join.conflicts) > SHOWN else ""
            self.emit(Event(EventKind.LABEL_CONFLICT,
                            f"{source}: {len(join.conflicts)} row(s) labelled before with another value; the first"
                            f" label stands: {shown}{more}", file=label_file,
                            data={"conflicts": [{"id": c.id, "file": c.batch, "kept": c.kept, "refused": c.refused}
                                                for c in join.conflicts[:50]]}))
