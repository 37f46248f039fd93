"""One SQLite transaction per batch: the ledger entry, every model's outcome and the serving pointers.

The :class:`Committer` is the one place a batch's decisions become true.
Before it runs, a batch has written only files that the next attempt replaces
(the archive, predictions, candidate snapshots); if the commit fails, the
snapshot files of its candidates are removed again. Events are told after the
commit, never before.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import replace
from typing import Any, Callable

from app.engine.context import Stage
from app.engine.records import BatchOutcome
from app.events import Event, EventKind
from app.ingest import FileSnapshot
from app.store import FolderState, ModelState
from app.validation import Batch


class Committer(Stage):
    """Applies batch outcomes to the store; ``pointer_lock`` keeps it apart from a rollback or promote by hand."""

    def commit(self, snapshot: FileSnapshot | None, batch: Batch | None, outcomes: dict[str, BatchOutcome],
               serving_before: dict[str, int | None], folder: FolderState | None = None, *, file_id: int | None = None,
               with_entry: Callable[[Any, int], None] | None = None) -> int | None:
        """Write a batch's ledger entry, results, snapshots and pointer changes in one transaction; return its file id.

        A batch's files (archive, predictions) are written before this: if the
        process dies before the commit, the batch is processed again and its
        files are simply replaced. ``file_id`` names a batch already in the
        ledger whose results change (its labels came later, see
        :mod:`app.engine.labels`); ``with_entry(db, file_id)`` writes more about
        the batch in the same transaction.
        """
        with self.pointer_lock, self.discarding_uncommitted_snapshots(outcomes):
            stale = {name for name in outcomes if self.store.serving_version(name) != serving_before[name]}
            with self.store.transaction() as db:
                if batch is not None:
                    file_id = self.store.record_file(batch.name, snapshot.sha256, "ingested", rows=batch.rows,
                                                     labeled=batch.labeled, seen=snapshot.seen, db=db)
                if with_entry is not None:
                    with_entry(db, file_id)
                for name, outcome in outcomes.items():
                    for write in outcome.writes:
                        write(db)
                    if name in stale and outcome.pointer_writes:
                        self._keep_manual_choice(name, outcome, db)
                    else:
                        for write in outcome.pointer_writes:
                            write(db)
                    if file_id is not None:
                        self.store.save_result(file_id, name, outcome.result.to_dict(), db=db)
                    if outcome.state is not None:
                        self.store.save_model_state(name, self._with_standing_flags(name, outcome.state), db=db)
                if folder is not None:
                    self.store.save_folder_state(folder, db=db)
            for name, outcome in outcomes.items():
                for version, pipeline in outcome.promoted_models.items():
                    self.registry.remember(name, version, pipeline)  # the next batch scores with it: no reload
                self.registry.write_serving_files(name)
        if batch is not None and batch.labeled:
            self.archive.remember(file_id, batch.frame)  # the next retrain's window starts with it: no archive read
        if batch is not None:
            self.emit(Event(EventKind.BATCH_INGESTED,
                            f"{batch.name}: {batch.rows:,} rows{' (labeled)' if batch.labeled else ''}",
                            file=batch.name, data={"rows": batch.rows, "labeled": batch.labeled, "file_id": file_id}))
        for name, outcome in outcomes.items():
            for event in outcome.events:
                self.emit(replace(event, time=time.time()))  # told now, after the commit made it true
            if batch is not None:
                self.emit(self._result_event(name, batch.name, outcome))
        return file_id

    def _with_standing_flags(self, name: str, state: ModelState) -> ModelState:
        """``state`` keeping what ``validate`` found: its ``code_regression`` flag stands until a validation
        passes or the snapshot it concerns stops serving (the serving version read in the caller's transaction)."""
        before = self.store.model_state(name)
        validation = before.validation if before is not None else None
        if not validation or validation.get("version") != self.store.serving_version(name):
            return state
        standing = [flag for flag in before.flags if flag["kind"] == "code_regression"]
        others = [flag for flag in state.flags if flag["kind"] != "code_regression"]
        return replace(state, flags=standing + others, validation=validation)

    @contextlib.contextmanager
    def discarding_uncommitted_snapshots(self, outcomes: dict[str, BatchOutcome]):
        """If the work inside fails (the commit, or the runs before it), delete the snapshot files the
        candidates in ``outcomes`` wrote: no file without a record."""
        try:
            yield
        except BaseException:
            if self.store.lost is not None:
                raise  # those paths may now be another state's files
            for name, outcome in outcomes.items():
                version = outcome.result.candidate_version
                if version is not None and self.store.snapshot(name, version) is None:
                    model_file = self.registry.snapshot_file(name, version)
                    for path in (model_file, model_file.with_suffix(".reference.parquet")):
                        path.unlink(missing_ok=True)
            raise

    def _keep_manual_choice(self, name: str, outcome: BatchOutcome, db) -> None:
        """Someone moved the serving pointer by hand while this batch trained: their choice stands."""
        reason = "serving changed by hand while the candidate trained; not promoted"
        version = outcome.result.candidate_version
        if version is not None and outcome.result.action == "promoted":
            self.store.set_snapshot_status(name, version, "rejected", reason, db=db)
        outcome.result.action = "rejected"
        outcome.result.action_detail = reason
        outcome.events = [e for e in outcome.events if e.kind not in (EventKind.PROMOTED, EventKind.ROLLED_BACK)]
        outcome.events.append(Event(EventKind.REJECTED, f"{name}: {reason}", model=name))

    def _result_event(self, name: str, file: str, outcome: BatchOutcome) -> Event:
        result = outcome.result
        parts = [f"{name} on {file}:"]
        metric = result.metric
        if result.metrics and metric:
            value = result.metrics.get(metric)
            defined = value is not None and value == value  # NaN: ROC AUC of a batch of one class
            parts.append(f"{metric} {value:.3f}" if defined else f"{metric} not defined on this batch")
        if result.drifted_features:
            parts.append(f"drifted {', '.join(result.drifted_features[:3])}")
        parts.append(f"action {result.action}")
        kind = EventKind.FLAGGED if result.flags and result.serving_version else EventKind.BATCH_RESULT
        return Event(kind, " ".join(parts), model=name, file=file,
                     data={"action": result.action, "flags": result.flags or [], "metrics": result.metrics})
