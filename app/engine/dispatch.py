"""Carrying out a command on the monitor's thread: rollback, promote, retrain, validate, exclude, include.

The route into the engine (:class:`~app.commands.Command`, its ticket, the
queue) is the monitor's; this is what happens once a command's turn comes. A
refusal or a failure is a :class:`~app.commands.CommandResult`, never an
exception.
"""

from __future__ import annotations

from dataclasses import replace

from app.commands import Command, CommandFailed, CommandResult
from app.config import ConfigError
from app.engine.commit import Committer
from app.engine.context import Stage, StageContext
from app.engine.exclusion import Excluder
from app.engine.records import BatchOutcome
from app.engine.reproduce import NOT_VALIDATED, Reproduction, reproduce
from app.engine.runner import ModelRunner
from app.environment import environment_diff, environment_record
from app.events import Event, EventKind
from app.registry import RollbackImpossible
from app.snapshots import SnapshotError


class Dispatcher(Stage):
    """Carries out commands against the models' runners, committing through ``committer``."""

    def __init__(self, context: StageContext, runners: dict[str, ModelRunner], committer: Committer) -> None:
        super().__init__(context)
        self.runners = runners
        self.committer = committer
        self.exclusions = Excluder(context, runners, committer)

    def validate(self, model: str) -> Reproduction:
        """Re-check ``model``'s serving snapshot now; record a ``validated``, ``code_regression`` or ``not_validated`` event.

        Only a completed check changes the model's ``code_regression`` flag.
        """
        self.set_training(model)
        try:
            result = reproduce(self.runners[self.config.model(model).name], self.archive)
        finally:
            self.set_training(None)
        if result.version is None:
            return result
        if result.other_config:
            self.emit(Event(EventKind.CONFIG_CHANGED, result.summary, model=model, data=result.to_dict()))
            return result
        if result.outcome == NOT_VALIDATED:  # the check could not be completed: neither passed nor failed
            self.emit(Event(EventKind.NOT_VALIDATED, result.summary, model=model, data=result.to_dict()))
            return result
        kind = EventKind.CODE_REGRESSION if result.regression else EventKind.VALIDATED
        if (state := self.store.model_state(model)) is not None:
            flags = [flag for flag in state.flags if flag["kind"] != "code_regression"]
            if result.regression:
                flags.insert(0, {"kind": "code_regression", "detail": result.summary})
            self.store.save_model_state(model, replace(state, flags=flags, validation=result.to_dict()))
        self.emit(Event(kind, result.summary, model=model, data=result.to_dict()))
        return result

    def environment_changed(self, model: str) -> list[str]:
        """What differs between the environment that trained ``model``'s serving snapshot and this one."""
        serving = self.registry.serving(model)
        if serving is None or "environment" not in serving.data:
            return []
        return environment_diff(serving.data["environment"], environment_record())

    def rollback(self, model: str, to_version: int | None = None, asked_serving: int | None = None) -> tuple[int, int]:
        """Serve the previous good snapshot (or ``to_version``); return (from, to).

        ``asked_serving``: the version that served when the rollback was asked.
        The rollback goes back from it, whatever serves by now: to the good
        snapshot that served before it, or refuses if that one serves already.
        """
        self.config.model(model)
        with self.pointer_lock:
            current = self.store.serving_version(model)
            if current is None:
                raise CommandFailed(f"{model} has no serving model yet")
            try:
                target = self.registry.rollback_target(model, to_version, back_from=asked_serving)
                self.registry.load(model, target.version)
            except (RollbackImpossible, SnapshotError) as error:
                raise CommandFailed(str(error)) from None
            detail = f"rolled back from v{current} to v{target.version}"
            if asked_serving not in (None, current):
                detail += f" (asked while v{asked_serving} served)"
            self.registry.switch_serving(model, target.version, "rollback", detail, old_status="rolled_back")
            self.registry.write_serving_files(model)
        self.emit(Event(EventKind.ROLLED_BACK, f"{model}: {detail}", model=model,
                        data={"from": current, "to": target.version, "automatic": False}))
        return current, target.version

    def promote(self, model: str, version: int) -> tuple[int | None, int]:
        """Serve ``version`` of ``model`` (a rejected or retired snapshot too); return (from, to)."""
        self.config.model(model)
        with self.pointer_lock:
            current = self.store.serving_version(model)
            record = self.store.snapshot(model, version)
            if record is None or not record.path:
                raise CommandFailed(f"{model} has no usable version {version}")
            if current == version:
                raise CommandFailed(f"{model} v{version} is already serving")
            try:
                self.registry.load(model, version)
            except SnapshotError as error:
                raise CommandFailed(str(error)) from None
            detail = f"promoted by hand from v{current} to v{version}" if current else f"promoted by hand: v{version}"
            self.registry.switch_serving(model, version, "manual", detail)
            self.registry.write_serving_files(model)
        self.emit(Event(EventKind.PROMOTED, f"{model}: {detail}", model=model,
                        data={"version": version, "from": current, "reason": "manual"}))
        return current, version

    def retrain_now(self, model: str) -> BatchOutcome:
        """Train and gate a candidate for ``model`` on this thread (the CLI's ``retrain``)."""
        runner = self.runners[self.config.model(model).name]
        with self.pointer_lock:
            serving_before = self.store.serving_version(model)
        self.set_training(model)
        try:
            outcome = runner.retrain()
        finally:
            self.set_training(None)
        self.committer.commit(None, None, {model: outcome}, serving_before={model: serving_before})
        return outcome

    def carry_out(self, command: Command) -> CommandResult:
        """Run ``command`` on this thread; a refusal or a failure is a result, never an exception."""
        try:
            return self._dispatch(command)
        except (CommandFailed, ConfigError, KeyError, ValueError) as error:
            return CommandResult(False, str(error))
        except Exception as error:  # noqa: BLE001 - the monitor must outlive every command
            self.set_training(None)
            message = f"{command.model + ': ' if command.model else ''}{type(error).__name__}: {error}"
            self.emit(Event(EventKind.ERROR, message, model=command.model, data={"where": command.kind}))
            return CommandResult(False, message)

    def _dispatch(self, command: Command) -> CommandResult:
        model = command.model
        if command.kind == "rollback":
            before, after = self.rollback(model, command.version, asked_serving=command.serving)
            asked = f" (asked while v{command.serving} served)" if command.serving not in (None, before) else ""
            return CommandResult(True, f"{model}: rolled back from v{before} to v{after}{asked}",
                                 {"from": before, "to": after})
        if command.kind == "promote":
            before, after = self.promote(model, command.version)
            return CommandResult(True, f"{model}: v{after} now serves (was {f'v{before}' if before else 'nothing'})",
                                 {"from": before, "to": after})
        if command.kind == "exclude":
            return self.exclusions.exclude(command.file, command.reason, command.by)
        if command.kind == "include":
            return self.exclusions.include(command.file)
        if command.kind == "retrain":
            result = self.retrain_now(model).result
            message = f"{model}: retrain {result.action}: {result.action_detail or ''}"
            failed = result.action == "failed"  # failed, cancelled or timed out: no candidate to gate
            return CommandResult(not failed, message.rstrip(": "), {"action": result.action})
        reproduction = self.validate(self.config.model(model).name)  # validate: pause and resume never queue
        return CommandResult(True, reproduction.summary, reproduction.to_dict())
