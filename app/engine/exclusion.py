"""Excluding an ingested batch after the fact, and including it again.

``exclude`` marks a batch ``excluded`` in the ledger, keeping why, who asked
and when. From then on no training window, reference profile, verdict or
validation uses it, and every snapshot that learned from it is tainted (see
:mod:`app.lineage`). A serving snapshot that is tainted is dealt with at once:

- dynamic: retrained on its own window less the batch; the candidate faces the
  gate against the last untainted snapshot that served (and, as every
  candidate, the naive baseline). If it fails (or nothing is left to train
  on), that snapshot serves again. With no untainted snapshot at all, only
  the naive baseline stands in its way; failing that, the tainted one keeps
  serving, flagged.
- static: flagged ``tainted``, with a retrain offered; it never retrains on
  its own.

Every change of the serving pointer this makes is recorded with the reason
``excluded FILE``, and the serving files follow. ``include`` lifts the
exclusion, and with it the taint and the flag. A repair already made stays:
it was gated like any promotion, and ``rollback``/``promote`` undo it.

Both run on the monitor's thread, as every command does (through :mod:`app.engine.dispatch`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from app.commands import CommandFailed, CommandResult
from app.engine.assess import state_word
from app.engine.commit import Committer
from app.engine.context import Stage, StageContext
from app.engine.records import BatchOutcome, BatchResult
from app.engine.runner import ModelRunner
from app.events import Event, EventKind
from app.lineage import TAINTED, excluded_batches, exclusion_text, repair_batches, taint_of, tainted_flag
from app.stats.profile import Profile
from app.store import FileRecord, ModelState


class Excluder(Stage):
    """Carries out ``exclude`` and ``include`` against the models' runners, committing as a retrain does."""

    def __init__(self, context: StageContext, runners: dict[str, ModelRunner], committer: Committer) -> None:
        super().__init__(context)
        self.runners = runners
        self.committer = committer

    def exclude(self, file: str, reason: str, by: str) -> CommandResult:
        """Exclude the ingested batch ``file``; repair or flag every serving snapshot that learned from it."""
        record = self._ingested(file)
        with self.pointer_lock:
            self.store.exclude_file(record.id, reason, by)
        return self._repair_models(record, reason, by)

    def finish_interrupted(self) -> None:
        """Finish each exclusion whose repair never completed: the process died (or the repair failed)
        after the exclusion was recorded. A model already repaired then is left as it is."""
        for file_id in self.store.unrepaired_exclusions():
            exclusion = self.store.exclusions()[file_id]
            self._repair_models(self.store.file(file_id), exclusion["reason"], exclusion["by"], resumed=True)
        self._settle_taint_flags()

    def _settle_taint_flags(self) -> None:
        """Put the ``tainted`` flag on exactly the models whose serving snapshot learned from an excluded batch.

        ``include`` lifts the exclusion, then settles each model's state: a process that died in between left
        the flag (and a verdict weighed without the batch) standing, and only this start can notice."""
        excluded = excluded_batches(self.store)
        self._refresh_reference()
        for name in self.runners:
            state, serving = self.store.model_state(name), self.registry.serving(name)
            if state is None:
                continue
            flagged = any(flag["kind"] == TAINTED for flag in state.flags)
            if flagged != (serving is not None and taint_of(self.store, serving, excluded) is not None):
                self._save_state(name, state, state.flags, excluded)

    def _repair_models(self, record: FileRecord, reason: str, by: str, resumed: bool = False) -> CommandResult:
        """Repair or flag every serving snapshot that learned from the excluded ``record``; then its repair is done."""
        file = record.name
        excluded = excluded_batches(self.store)
        self._refresh_reference()
        lines, changes = [], {}
        for name in self.runners:
            line, change = self._repair(name, file, excluded)
            if line:
                lines.append(line)
            if change:
                changes[name] = change
            self._settle_state(name, record, excluded)
        self.store.exclusion_repaired(record.id)
        why = f" ({reason})" if reason else ""
        if resumed:
            summary = (f"{file}: excluded{why}, its repair interrupted; finished now: "
                       + ("; ".join(lines) if lines else "no serving model was left to repair"))
        else:
            summary = f"{file}: excluded{why}; " + ("; ".join(lines) if lines else "no serving model learned from it")
        self.emit(Event(EventKind.EXCLUDED, summary, file=file,
                        data={"reason": reason, "by": by, "changes": changes, "models": lines, "resumed": resumed}))
        return CommandResult(True, summary, {"file": file, "reason": reason, "by": by, "changes": changes})

    def include(self, file: str) -> CommandResult:
        """Lift the exclusion of ``file``: its taint and flags go; a repair already made stays."""
        record = self._excluded(file)
        with self.pointer_lock:
            self.store.include_file(record.id)
        excluded = excluded_batches(self.store)
        self._refresh_reference()
        for name in self.runners:
            self._settle_state(name, record, excluded)
        summary = (f"{file}: included again; it counts for training, the reference and the verdict from now on"
                   " (a repair made when it was excluded stays: roll back or promote to undo it)")
        self.emit(Event(EventKind.INCLUDED, summary, file=file))
        return CommandResult(True, summary, {"file": file})

    # --- the ledger ---------------------------------------------------------------

    def _entries(self, file: str) -> list[FileRecord]:
        entries = [record for record in self.store.files() if record.name == file]
        if not entries:
            raise CommandFailed(f"{file}: no batch of that name in the ledger (driftdeck status lists them)")
        return entries

    def _ingested(self, file: str) -> FileRecord:
        """The newest ledger entry of ``file`` that reached the models; CommandFailed saying why there is none."""
        entries = self._entries(file)
        usable = [record for record in entries if record.status in ("ingested", "excluded")]
        if not usable:
            last = entries[-1]
            what = "a label file" if last.status == "labels" else last.status
            raise CommandFailed(f"{file} was {what}{f' ({last.reason})' if last.reason else ''}: it never"
                                " reached a model as a batch, so there is nothing to exclude")
        record = usable[-1]
        if record.status == "excluded":
            raise CommandFailed(f"{file} is already {exclusion_text(self.store.exclusions().get(record.id))};"
                                " `driftdeck include` takes it back")
        return record

    def _excluded(self, file: str) -> FileRecord:
        entries = self._entries(file)
        excluded = [record for record in entries if record.status == "excluded"]
        if not excluded:
            raise CommandFailed(f"{file} is not excluded (it is {entries[-1].status}); nothing to include")
        return excluded[-1]

    # --- the models -----------------------------------------------------------------

    def _repair(self, name: str, file: str, excluded: dict[str, str]) -> tuple[str, dict[str, Any] | None]:
        """Deal with ``name``'s serving snapshot if it learned from an excluded batch; a line saying what happened."""
        serving = self.registry.serving(name)
        if serving is None or taint_of(self.store, serving, excluded) is None:
            return "", None
        runner = self.runners[name]
        why = f"excluded {file}"
        if not runner.model.is_dynamic:
            return (f"{name}: v{serving.version} learned from it and is flagged {TAINTED}; retrain it (r, or"
                    f" driftdeck retrain {self.config.data_dir} --model {name})"), None
        good = self.registry.last_untainted(name)
        outcome = self._retrain_without(name, runner, serving, good, why, excluded)
        promoted = outcome is not None and outcome.result.action == "promoted"
        if not promoted and good is not None:
            self._serve_untainted(name, serving.version, good.version, why, outcome)
        now = self.store.serving_version(name)
        if now == serving.version:
            return (f"{name}: v{now} learned from it and still serves, flagged {TAINTED}: no snapshot without it"
                    " passed the gate; retrain it once more labeled batches arrive"), None
        how = "retrained without it" if promoted else "the last snapshot that did not learn from it"
        return f"{name}: v{serving.version} learned from it; v{now} serves ({how})", {"from": serving.version, "to": now}

    def _retrain_without(self, name: str, runner: ModelRunner, serving, good, why: str,
                         excluded: dict[str, str]) -> BatchOutcome | None:
        """Retrain on ``serving``'s window less the excluded batches, gated against ``good``; committed.
        None when nothing else was in the window."""
        ids = []
        for _, sha in repair_batches(serving, excluded):
            record = self.store.file_by_sha(sha)
            if record is not None and record.status == "ingested":
                ids.append(record.id)
        if not ids:
            return None
        with self.pointer_lock:
            serving_before = self.store.serving_version(name)
        self.set_training(name)
        try:
            against = f"gated against v{good.version}" if good else "no snapshot without it: gated against the naive baseline"
            outcome = runner.repair(ids, against=good, reason=why,
                                    note=f"v{serving.version} learned from {why.removeprefix('excluded ')}; retrained"
                                         f" without it on the rest of its window, {against}")
        finally:
            self.set_training(None)
        self.committer.commit(None, None, {name: outcome}, serving_before={name: serving_before})
        return outcome

    def _serve_untainted(self, name: str, tainted: int, good: int, why: str, outcome: BatchOutcome | None) -> None:
        """Serve ``good`` again in place of the tainted ``tainted``: its retrain was rejected, or there was none."""
        retrain = (f"its retrain without it was rejected ({outcome.result.action_detail or ''})"
                   if outcome is not None else "nothing else in its window to retrain on")
        detail = f"v{tainted} learned from {why.removeprefix('excluded ')}; {retrain}; v{good} did not"
        with self.pointer_lock:
            self.registry.switch_serving(name, good, why, detail, old_status="rolled_back")
            self.registry.write_serving_files(name)
        self.emit(Event(EventKind.ROLLED_BACK, f"{name}: v{tainted} → v{good}: {detail}", model=name,
                        data={"from": tainted, "to": good, "automatic": True, "reason": why}))

    def _settle_state(self, name: str, toggled: FileRecord, excluded: dict[str, str]) -> None:
        """``name``'s state once ``toggled`` was excluded or included (and any repair made).

        The verdict is weighed again without the batches that do not count;
        when ``toggled`` is (or was) the newest batch, the flags are those of
        the newest batch that counts; the ``tainted`` flag is on exactly while
        the serving snapshot learned from an excluded batch.
        """
        state = self.store.model_state(name)
        if state is None:
            return
        newest = self.store.results(name, limit=1, counted=True)
        result = BatchResult.from_dict(newest[0][2]) if newest else BatchResult()
        flags = state.flags
        if not newest or toggled.id >= newest[0][0]:
            standing = [flag for flag in flags if flag["kind"] == "code_regression"]
            flags = standing + [flag for flag in result.flags or [] if flag["kind"] != "code_regression"]
        self._save_state(name, state, flags, excluded, result)

    def _save_state(self, name: str, state: ModelState, flags: list[dict[str, str]], excluded: dict[str, str],
                    result: BatchResult | None = None) -> None:
        """Save ``name``'s state with ``flags``, the ``tainted`` flag as its serving snapshot's lineage has it,
        and the verdict weighed again; ``result``: the newest batch that counts (read when not given)."""
        if result is None:
            newest = self.store.results(name, limit=1, counted=True)
            result = BatchResult.from_dict(newest[0][2]) if newest else BatchResult()
        flags = [flag for flag in flags if flag["kind"] != TAINTED]
        serving = self.registry.serving(name)
        if serving is not None and (taint := taint_of(self.store, serving, excluded)) is not None:
            flags.insert(0, tainted_flag(serving.version, taint.batches, self.config.data_dir, name))
        self.store.save_model_state(name, replace(state, flags=flags, verdict=self.runners[name].assess.verdict().to_dict(),
                                                  state=state_word(flags, result.feature_drift or {})))

    # --- the folder's reference -----------------------------------------------------

    def _refresh_reference(self) -> None:
        """Keep the folder's reference profile on its first batch that is not excluded.

        That profile is what drift is measured against before any model serves.
        When the batch it came from is excluded (or an older one is included
        again), it is built again from the first batch that counts; when that
        batch's rows were not archived (it was unlabeled), it is dropped and the
        next batch makes it, as the first batch of a new folder does.
        """
        folder = self.store.folder_state()
        if folder.reference is None:
            return
        first = next(iter(self.store.files("ingested")), None)
        source = folder.reference_sha or next(
            (record.sha256 for record in self.store.files() if record.status in ("ingested", "excluded")), None)
        if first is None or source == first.sha256:
            return
        try:
            folder = replace(folder, reference=Profile.build(self.archive.read(first.sha256), self.config.schema).to_dict(),
                             reference_sha=first.sha256)
        except OSError:
            folder = replace(folder, reference=None, reference_sha=None)
        self.store.save_folder_state(folder)

