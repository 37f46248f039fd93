"""The ``driftdeck`` command line: everything the TUI can do, headless.

Errors are one line on stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import json
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from rich.console import Console

from app import __version__
from app.config import CONFIG_NAME, ConfigError, load_config
from app.commands import Command, CommandFailed, CommandResult, answer_within, asker, hand_over
from app.engine_link import EngineUnavailable
from app.errorlog import log_error
from app.events import ERROR_KINDS, Event, EventKind, printable
from app.headless import INTERRUPTED, event_printer, silence
from app.engine.lock import MonitorBusy
from app.engine.monitor import Monitor
from app.lineage import taint_of
from app.mirror import BucketMirror, list_objects, mirror_for
from app.objectstore import StoreError, StoreLocation, is_store_url, open_store, parse_store_url
from app.store import StateLost, StoreIncompatible
from app.workspace import Workspace

# Events that mean a file could not be handled: ``watch --once`` then exits 1. A quarantine is the normal
# handling of a bad file, and a failed candidate a model's outcome, so neither counts.
FAILURE_KINDS = frozenset({EventKind.FILE_ERROR, EventKind.ERROR})
CLOSED_PIPE_STATUS = 128 + signal.SIGPIPE  # what a shell reports for a program its reader stopped reading
OS_ERROR_WORDS = {
    errno.ENOENT: "no such file or folder",
    errno.EACCES: "permission denied",
    errno.EPERM: "not permitted",
    errno.EISDIR: "is a folder, not a file",
    errno.ENOTDIR: "a part of this path is a file, not a folder",
    errno.EEXIST: "already exists",
    errno.ENOSPC: "no space left on the disk",
    errno.EROFS: "the disk is read-only",
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        local_side_of_store(args)
        return args.run(args) or 0
    except (ConfigError, CommandFailed, EngineUnavailable, MonitorBusy, StoreIncompatible, StateLost, StoreError,
            OSError, ValueError) as error:
        print(f"driftdeck: {printable(str(error))}", file=sys.stderr)
        return 2
    except sqlite3.DatabaseError as error:
        print(f"driftdeck: the state database is damaged or not a database ({error}); "
              "stop any running watcher, then move the state folder aside to start afresh", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return INTERRUPTED
    except Exception as error:  # noqa: BLE001 - no traceback ever reaches a person: one line, the details in the log
        logged = log_error(state_folder(args), error, f"driftdeck {' '.join(sys.argv[1:] if argv is None else argv)}")
        where = f"; details in {logged}" if logged else ""
        print(f"driftdeck: unexpected error: {type(error).__name__}: {printable(str(error))}{where}", file=sys.stderr)
        return 1


def data_dir_argument(text: str) -> Path | StoreLocation:
    """A local folder, or an object store URL (``s3://bucket/prefix``), which a Path would mangle."""
    return parse_store_url(text) if is_store_url(text) else Path(text)


def local_side_of_store(args: argparse.Namespace) -> None:
    """Point a command on a store URL at the URL's local folder (``--state``, or ``./.driftdeck-<bucket>-<hash>``).

    That folder is the URL's data folder: the mirrored objects, ``driftdeck.toml``
    and the engine's state (``.driftdeck/``) all live in it.
    """
    location = getattr(args, "data_dir", None)
    if not isinstance(location, StoreLocation):
        args.source = None
        return
    folder = Path(args.state or location.default_local_folder()).resolve()
    args.data_dir, args.state, args.source = folder, None, location
    if args.command_name == "init":
        return
    if not (folder / CONFIG_NAME).is_file():
        raise StoreError(f"{location.url}: no local folder for it at {folder}; run `driftdeck init {location.url}"
                         " --target COLUMN` first (from the folder you run driftdeck in, or with the same --state)")
    recorded = load_config(folder).source
    if recorded is not None and parse_store_url(recorded) != location:
        raise StoreError(f"{folder} stands for {recorded}, not {location.url}")


def state_folder(args: argparse.Namespace) -> Path | None:
    """The state folder a command works on (``--state``, or ``DATA_DIR/.driftdeck``), if it names one."""
    if getattr(args, "state", None):
        return args.state
    folder = getattr(args, "data_dir", None) or getattr(args, "dest", None)
    return Path(folder) / ".driftdeck" if folder else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="driftdeck", description="Watch a data folder; detect drift; retrain, gate, snapshot and roll back models.")
    parser.add_argument("--version", action="version", version=f"driftdeck {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    def command(name: str, run: Callable, help_text: str, data_dir: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if data_dir:
            sub.add_argument("data_dir", type=data_dir_argument, metavar="DATA_DIR",
                             help="a folder, or an object store URL such as s3://bucket/prefix")
            sub.add_argument("--state", type=Path, metavar="DIR",
                             help="state folder (default DATA_DIR/.driftdeck; for a URL, the URL's local folder,"
                                  " default ./.driftdeck-<bucket>-<hash>)")
        sub.set_defaults(run=plain_spoken(run), command_name=name)
        return sub

    init = command("init", run_init, "infer the schema of the files in DATA_DIR and write driftdeck.toml")
    init.add_argument("--target", required=True, help="the label column")
    init.add_argument("--timestamp", help="the time column (orders the holdout)")
    init.add_argument("--id-column", help="a row id carried into predictions")
    init.add_argument("--force", action="store_true", help="replace an existing driftdeck.toml")

    watch = command("watch", run_watch, "watch DATA_DIR: the live monitor, attached to the folder's engine "
                                        "(started if none runs), or the engine alone with --headless")
    watch.add_argument("--headless", action="store_true", help="print one line per event instead of the TUI")
    watch.add_argument("--once", action="store_true", help="process the files already there, then exit")
    watch.add_argument("--json", action="store_true", help="with --headless/--once: one JSON object per event")
    watch.add_argument("--poll", action="store_true", help="poll the folder (for network mounts)")

    serve = command("serve", run_serve, "the same monitor in a web browser (one dashboard per tab)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")

    command("stop", run_stop, "stop the engine watching DATA_DIR (a headless watch, or one a dashboard started)")

    status = command("status", run_status, "ingested batches, models, flags and verdicts")
    status.add_argument("--json", action="store_true")
    status.add_argument("--limit", type=int, default=None, help="only the newest N batches")

    retrain = command("retrain", run_retrain, "train a candidate for a model now; it still faces the gate")
    retrain.add_argument("--model", required=True)

    rollback = command("rollback", run_rollback, "serve a model's previous good snapshot (or --to VERSION)")
    rollback.add_argument("--model", required=True)
    rollback.add_argument("--to", type=int, metavar="VERSION")

    promote = command("promote", run_promote, "serve a given snapshot version of a model")
    promote.add_argument("--model", required=True)
    promote.add_argument("--version", type=int, required=True)
    promote.add_argument("--force", action="store_true", help="serve it even if the gate rejected it")

    snapshots = command("snapshots", run_snapshots, "a model's snapshots and serving history")
    snapshots.add_argument("--model")
    snapshots.add_argument("--json", action="store_true")

    predict = command("predict", run_predict, "score a file with a model's serving (or given) version")
    predict.add_argument("--model", required=True)
    predict.add_argument("input", type=Path, metavar="INPUT")
    predict.add_argument("--version", type=int)
    predict.add_argument("--out", type=Path, metavar="FILE", help=".csv or .parquet (default: CSV on stdout)")

    export = command("export", run_export, "write a snapshot's model file, model card and reference profile")
    export.add_argument("--model", required=True)
    export.add_argument("--version", type=int)
    export.add_argument("--out", type=Path, required=True, metavar="DIR")
    export.add_argument("--force", action="store_true", help="write into DIR even if it holds files")

    exclude = command("exclude", run_exclude, "mark an ingested batch bad after the fact: no model learns from it"
                                              " again; serving models that did are repaired or flagged")
    exclude.add_argument("file", metavar="FILE", help="the batch file's name, as the ledger shows it")
    exclude.add_argument("--reason", default="", metavar="TEXT", help="why it is excluded (kept with it)")
    exclude.add_argument("--replay", action="store_true",
                         help="also replay the batches after it without it, in a temporary state, and show the difference")
    exclude.add_argument("--json", action="store_true")

    include = command("include", run_include, "take an excluded batch back: it counts for training and the verdict again")
    include.add_argument("file", metavar="FILE")

    validate = command("validate", run_validate,
                       "retrain each serving snapshot with today's code and config; exit 1 on a regression, 2 if it could not validate")
    validate.add_argument("--model")
    validate.add_argument("--json", action="store_true")

    replay = command("replay", run_replay, "copy SRC's batch files into DEST one at a time, as a producer would", data_dir=False)
    replay.add_argument("src", type=Path, metavar="SRC")
    replay.add_argument("dest", type=Path, metavar="DEST")
    replay.add_argument("--interval", type=float, default=2.0, metavar="SECONDS")
    replay.add_argument("--start", type=int, default=0, metavar="N", help="skip the first N files")

    demo = command("demo", run_demo, "a fresh folder with a sample scenario, replayed into the live monitor", data_dir=False)
    demo.add_argument("--scenario", choices=("flowers", "sea_level", "late_labels"), default="flowers")
    demo.add_argument("--speed", type=float, default=2.0, metavar="SECONDS", help="seconds between batches")
    demo.add_argument("--headless", action="store_true")
    demo.add_argument("--json", action="store_true")
    demo.add_argument("--keep", action="store_true", help="keep the demo folder when the demo ends")
    return parser


def plain_spoken(run: Callable) -> Callable:
    """``run`` with OS errors said in words, and a reader that closed our output ending the command quietly."""

    def run_plainly(args) -> int:
        try:
            status = run(args)
            sys.stdout.flush()  # a closed pipe shows here, not at exit
            return status
        except BrokenPipeError:
            silence(sys.stdout)
            return CLOSED_PIPE_STATUS
        except OSError as error:
            raise CommandFailed(os_error_in_words(error)) from None

    return run_plainly


def os_error_in_words(error: OSError) -> str:
    """"nope.csv: no such file or folder" rather than "[Errno 2] No such file or directory: 'nope.csv'"."""
    if error.errno is None:  # raised by driftdeck itself, already in words
        return str(error)
    words = OS_ERROR_WORDS.get(error.errno) or (error.strerror or str(error)).lower()
    return f"{error.filename}: {words}" if error.filename else words


# --- commands ---------------------------------------------------------------------------


def run_init(args) -> int:
    from app.scaffold import write_config

    if args.source is not None:
        fetch_for_init(args.source, args.data_dir)
    elif not args.data_dir.is_dir():
        raise CommandFailed(f"{args.data_dir}: no such folder")
    source = args.source.url if args.source else None
    path = write_config(args.data_dir, args.target, args.timestamp, args.id_column, args.force, source=source)
    print(f"wrote {path}; check [schema] and [[models]], then run: driftdeck watch {source or args.data_dir}")
    return 0


def fetch_for_init(location: StoreLocation, folder: Path) -> None:
    """Make the URL's local folder and bring the bucket's batch objects into it, for ``init`` to read."""
    store = open_store(location)
    list_objects(location, store)  # a missing bucket or a refusal is said before anything is made
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    mirror = BucketMirror(location, folder, event_printer(as_json=False), filesystem=store)
    try:
        done = mirror.sync()
    finally:
        mirror.stop()
    print(f"{location.url}: {len(done.fetched)} object(s) read into {folder}", file=sys.stderr)


def run_watch(args) -> int:
    if not (args.once or args.headless):
        from app.engine_link import EngineClient
        from app.tui.app import run_tui

        client = EngineClient(args.data_dir, args.state, poll=args.poll)
        if not client.engine_running():
            print(f"starting the engine for {client.data_dir}…", file=sys.stderr, flush=True)
        return run_tui(client)
    monitor = Monitor(args.data_dir, args.state, poll=args.poll)
    if args.once:
        failures: list[Event] = []
        monitor.subscribe(event_printer(args.json))
        monitor.subscribe(lambda event: failures.append(event) if event.kind in FAILURE_KINDS else None)
        try:
            monitor.acquire()  # the bucket's objects land in the folder only under its lock
            if mirror := store_mirror(monitor):
                mirror.sync()
                mirror.stop()
            monitor.run_once()
        finally:
            monitor.close()
        if monitor.fatal:
            return 2
        return 1 if failures else 0
    return watch_headless(monitor, args.json)


def run_serve(args) -> int:
    from app.tui.serve import serve

    return serve(args.data_dir, args.state, args.host, args.port)


def watch_headless(monitor: Monitor, as_json: bool, until: threading.Event | None = None) -> int:
    """Print events until Ctrl-C (exit status 130), SIGTERM, ``driftdeck stop`` or ``until`` (0); serve
    attached dashboards."""
    from app.engine_link import EngineServer

    stop = until or threading.Event()
    monitor.subscribe(event_printer(as_json, on_closed=stop.set))
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    monitor.start()
    link = EngineServer(monitor, on_stop=stop.set)
    link.start()
    mirror = store_mirror(monitor)
    if mirror is not None:
        mirror.start()
    try:
        while not stop.wait(0.2) and monitor.fatal is None:
            pass
    except KeyboardInterrupt:
        return INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)
        if mirror is not None:
            mirror.stop()
        link.close()
        monitor.close()
    return 2 if monitor.fatal else 0


def store_mirror(monitor: Monitor) -> BucketMirror | None:
    """The mirror of the object store the monitor's folder stands for (its config's ``source``), if any."""
    watch = monitor.config.watch
    return mirror_for(monitor.config.source, monitor.data_dir, monitor.emit, watch.list_seconds, watch.read_attempts)


def run_stop(args) -> int:
    from app.engine_link import stop_engine
    from app.registry import StatePaths

    data_dir = args.data_dir.resolve()
    paths = StatePaths(args.state.resolve() if args.state else data_dir / ".driftdeck")
    pid = stop_engine(paths)
    print(f"stopped the engine watching {data_dir} (pid {pid})")
    return 0


def run_status(args) -> int:
    from app.cli_tables import batches_table, models_table
    from app.report import status_report

    with Workspace.open(args.data_dir, args.state, read_only=True) as workspace:
        report = status_report(workspace.store, workspace.config, batch_limit=args.limit)
    if args.json:
        print(json.dumps(report, default=str, indent=2))
        return 0
    console = Console()
    counts = report["counts"]
    excluded = f", {counts['excluded']} excluded" if counts["excluded"] else ""
    skipped = f", {counts['skipped']} skipped (not regular files)" if counts["skipped"] else ""
    console.print(f"{printable(report['data_dir'])}: {counts['ingested']} ingested{excluded}, {counts['quarantined']}"
                  f" quarantined, {counts['duplicate']} duplicate{skipped}", markup=False, highlight=False)
    console.print(models_table(report["models"], console.width))
    console.print(batches_table(report["batches"], sum(counts.values()), console.width))
    return 0


def run_snapshots(args) -> int:
    from app.cli_tables import snapshots_table
    from app.report import serving_history_rows, snapshot_rows

    with Workspace.open(args.data_dir, args.state, read_only=True) as workspace:
        config, store = workspace.config, workspace.store
        names = [config.model(args.model).name] if args.model else [m.name for m in config.models]
        # newest first, as the monitor lists them
        rows = [row for name in names for row in reversed(snapshot_rows(store, name))]
        history = {name: serving_history_rows(store, name)[::-1] for name in names}
    if args.json:
        print(json.dumps({"snapshots": rows, "serving_history": history}, default=str, indent=2))
        return 0
    console = Console()
    console.print(snapshots_table(rows, console.width))
    for name, changes in history.items():
        for change in changes:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(change["time"]))
            console.print(f"{name}: {when} v{change['version']} serves ({change['reason']}) {printable(change['detail'])}",
                          markup=False, highlight=False)
    return 0


def run_retrain(args) -> int:
    return _print_result(_run_commands(args, "retrain", [args.model])[0])


def run_rollback(args) -> int:
    return _print_result(_run_commands(args, "rollback", [args.model], args.to)[0])


def run_promote(args) -> int:
    with Workspace.open(args.data_dir, args.state, read_only=True) as workspace:
        record = workspace.store.snapshot(workspace.config.model(args.model).name, args.version)
        taint = taint_of(workspace.store, record) if record is not None else None
    if record is not None and record.status == "rejected" and not args.force:
        raise CommandFailed(f"{args.model} v{args.version} was rejected: {record.reason or 'no reason recorded'}; "
                            "pass --force to serve it anyway")
    if taint is not None and not args.force:
        raise CommandFailed(f"{args.model} v{args.version} learned from excluded {', '.join(taint.batches)}; "
                            "pass --force to serve it anyway")
    return _print_result(_run_commands(args, "promote", [args.model], args.version)[0])


def _print_result(result: CommandResult) -> int:
    if not result.ok:
        raise CommandFailed(result.message)
    print(result.message)
    return 0


def _run_commands(args, kind: str, models: list[str] | None, version: int | None = None) -> list[CommandResult]:
    """Carry out ``kind`` for each of ``models`` (None: all) here, or through the ``watch`` holding the folder."""

    def commands(monitor: Monitor) -> list[Command]:
        names = [monitor.config.model(name).name for name in models] if models else list(monitor.runners)
        return [Command(kind, name, version, monitor.store.serving_version(name) if kind == "rollback" else None)
                for name in names]

    return _carry_out(args, kind, commands)


def _carry_out(args, kind: str, make_commands: Callable[[Monitor], list[Command]]) -> list[CommandResult]:
    """Carry out the commands ``make_commands`` gives here, or through the ``watch`` holding the folder.

    If another command holds the folder, say so and do nothing: nothing is left to run later.
    """
    monitor = Monitor(args.data_dir, args.state)
    try:
        commands = make_commands(monitor)
        try:
            monitor.acquire(role=kind)
        except MonitorBusy as busy:
            if busy.role != "watch":
                raise CommandFailed(f"{busy}; nothing was done: ask again once it has finished") from None
            print(f"a running driftdeck watches {args.data_dir}; handed the {kind} to it…", file=sys.stderr)
            wait = answer_within(len(monitor.config.models), monitor.config.watch.train_timeout)
            return [hand_over(monitor.store, command, wait, busy.pid) for command in commands]
        monitor.subscribe(_progress_printer)
        tickets = [monitor.submit(command) for command in commands]
        monitor.serve_queued()
        return [ticket.wait(0) for ticket in tickets]
    finally:
        monitor.close()


def _progress_printer(event: Event) -> None:
    if event.kind in ERROR_KINDS:
        print(printable(event.message), file=sys.stderr)


def run_predict(args) -> int:
    from app.serving import write_table

    with Workspace.open(args.data_dir, args.state, read_only=True) as workspace:
        predictions = workspace.predict_file(args.model, args.input, args.version)
    text = write_table(predictions, args.out)
    if text is not None:
        sys.stdout.write(text)
    else:
        print(f"wrote {len(predictions):,} predictions to {args.out}", file=sys.stderr)
    return 0


def run_export(args) -> int:
    if args.out.is_dir() and any(args.out.iterdir()) and not args.force:
        raise CommandFailed(f"{args.out} is not empty; pass --force to write into it")
    with Workspace.open(args.data_dir, args.state, read_only=True) as workspace:
        written = workspace.export(args.model, args.out, args.version)
    for path in written:
        print(path)
    return 0


def run_exclude(args) -> int:
    by = asker()
    result = _carry_out(args, "exclude", lambda monitor: [Command("exclude", file=args.file, reason=args.reason, by=by)])[0]
    if not result.ok:
        raise CommandFailed(result.message)
    cost = _replay_without(args) if args.replay else None
    if args.json:
        print(json.dumps({"exclusion": {"message": result.message, **result.data},
                          "replay": cost.to_dict() if cost else None}, indent=2, default=str))
        return 0
    print(printable(result.message))
    if cost is not None:
        from app.exclusion_cost import cost_table

        console = Console()
        console.print(cost_table(cost, console.width))
    return 0


def _replay_without(args):
    """What the excluded batch cost (see app.exclusion_cost); None, said on stderr, when it trained nothing."""
    from app.exclusion_cost import replay_excluded

    print(f"replaying the batches after {printable(args.file)} with and without it…", file=sys.stderr, flush=True)
    with Workspace.open(args.data_dir, args.state, read_only=True) as workspace:
        cost = replay_excluded(workspace, args.file)
    if cost is None:
        print(f"nothing to replay: {printable(args.file)} was unlabeled, so it trained nothing", file=sys.stderr)
    return cost


def run_include(args) -> int:
    return _print_result(_carry_out(args, "include", lambda monitor: [Command("include", file=args.file)])[0])


def run_validate(args) -> int:
    from app.engine.reproduce import exit_code

    results = _run_commands(args, "validate", [args.model] if args.model else None)
    failed = [result.message for result in results if not result.ok]
    if failed:
        raise CommandFailed("; ".join(failed))
    if args.json:
        print(json.dumps([result.data for result in results], indent=2, default=str))
    else:
        for result in results:
            print(result.message)
    return exit_code([result.data["outcome"] for result in results])


def run_replay(args) -> int:
    from app.replay import replay

    replay(args.src, args.dest, interval=args.interval, start=args.start, progress=print)
    return 0


def run_demo(args) -> int:
    from app.demo import run_demo as demo

    return demo(args.scenario, args.speed, headless=args.headless, as_json=args.json, keep=args.keep)


if __name__ == "__main__":
    sys.exit(main())
