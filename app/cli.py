"""The ``driftdeck`` command line: everything the TUI can do, headless.

Errors are one line on stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
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
from app.config import ConfigError
from app.events import ERROR_KINDS, Event, printable
from app.engine_link import EngineUnavailable
from app.monitor import CommandFailed, Monitor, MonitorBusy

REMOTE_WAIT_SECONDS = 3600


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        return args.run(args) or 0
    except (ConfigError, CommandFailed, EngineUnavailable, MonitorBusy, OSError, ValueError) as error:
        print(f"driftdeck: {error}", file=sys.stderr)
        return 2
    except sqlite3.DatabaseError as error:
        print(f"driftdeck: the state database is damaged or not a database ({error}); "
              "move the state folder aside to start afresh", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="driftdeck", description="Watch a data folder; detect drift; retrain, gate, snapshot and roll back models.")
    parser.add_argument("--version", action="version", version=f"driftdeck {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    def command(name: str, run: Callable, help_text: str, data_dir: bool = True) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if data_dir:
            sub.add_argument("data_dir", type=Path, metavar="DATA_DIR")
            sub.add_argument("--state", type=Path, metavar="DIR", help="state folder (default DATA_DIR/.driftdeck)")
        sub.set_defaults(run=run)
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

    validate = command("validate", run_validate,
                       "retrain each serving snapshot with today's code and config; exit 1 on a regression")
    validate.add_argument("--model")
    validate.add_argument("--json", action="store_true")

    replay = command("replay", run_replay, "copy SRC's batch files into DEST one at a time, as a producer would", data_dir=False)
    replay.add_argument("src", type=Path, metavar="SRC")
    replay.add_argument("dest", type=Path, metavar="DEST")
    replay.add_argument("--interval", type=float, default=2.0, metavar="SECONDS")
    replay.add_argument("--start", type=int, default=0, metavar="N", help="skip the first N files")

    demo = command("demo", run_demo, "a fresh folder with a sample scenario, replayed into the live monitor", data_dir=False)
    demo.add_argument("--scenario", choices=("flowers", "sea_level"), default="flowers")
    demo.add_argument("--speed", type=float, default=2.0, metavar="SECONDS", help="seconds between batches")
    demo.add_argument("--headless", action="store_true")
    demo.add_argument("--json", action="store_true")
    return parser


# --- commands ---------------------------------------------------------------------------


def run_init(args) -> int:
    from app.scaffold import write_config

    path = write_config(args.data_dir, args.target, args.timestamp, args.id_column, args.force)
    print(f"wrote {path}; check [schema] and [[models]], then run: driftdeck watch {args.data_dir}")
    return 0


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
        monitor.subscribe(event_printer(args.json))
        try:
            monitor.run_once()
        finally:
            monitor.close()
        return 0
    return watch_headless(monitor, args.json)


def run_serve(args) -> int:
    from app.serve import serve

    return serve(args.data_dir, args.state, args.host, args.port)


def watch_headless(monitor: Monitor, as_json: bool, until: threading.Event | None = None) -> int:
    """Print events until Ctrl-C, SIGTERM, ``driftdeck stop`` or ``until``; serve attached dashboards."""
    from app.engine_link import EngineServer

    stop = until or threading.Event()
    monitor.subscribe(event_printer(as_json))
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    monitor.start()
    link = EngineServer(monitor, on_stop=stop.set)
    link.start()
    try:
        while not stop.wait(0.2):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        link.close()
        monitor.close()
    return 0


def run_stop(args) -> int:
    from app.engine_link import stop_engine
    from app.registry import StatePaths

    data_dir = args.data_dir.resolve()
    paths = StatePaths(args.state.resolve() if args.state else data_dir / ".driftdeck")
    pid = stop_engine(paths)
    print(f"stopped the engine watching {data_dir} (pid {pid})")
    return 0


def event_printer(as_json: bool) -> Callable[[Event], None]:
    lock = threading.Lock()

    def show(event: Event) -> None:
        if as_json:
            line = json.dumps(event.to_dict(), default=str)
        else:
            stamp = time.strftime("%H:%M:%S", time.localtime(event.time))
            line = f"{stamp} {event.kind:<18} {printable(event.message)}"
        stream = sys.stderr if (event.kind in ERROR_KINDS and not as_json) else sys.stdout
        with lock:
            print(line, file=stream, flush=True)

    return show


def run_status(args) -> int:
    from app.report import batches_table, models_table, status_report

    monitor = Monitor(args.data_dir, args.state)
    try:
        report = status_report(monitor.store, monitor.config, batch_limit=args.limit)
    finally:
        monitor.close()
    if args.json:
        print(json.dumps(report, default=str, indent=2))
        return 0
    console = Console()
    counts = report["counts"]
    console.print(f"{printable(report['data_dir'])}: {counts['ingested']} ingested, {counts['quarantined']} quarantined, "
                  f"{counts['duplicate']} duplicate", markup=False, highlight=False)
    console.print(models_table(report["models"]))
    console.print(batches_table(report["batches"]))
    return 0


def run_snapshots(args) -> int:
    from app.report import serving_history_rows, snapshot_rows, snapshots_table

    monitor = Monitor(args.data_dir, args.state)
    try:
        names = [monitor.config.model(args.model).name] if args.model else [m.name for m in monitor.config.models]
        rows = [row for name in names for row in snapshot_rows(monitor.store, name)]
        history = {name: serving_history_rows(monitor.store, name) for name in names}
    finally:
        monitor.close()
    if args.json:
        print(json.dumps({"snapshots": rows, "serving_history": history}, default=str, indent=2))
        return 0
    console = Console()
    console.print(snapshots_table(rows))
    for name, changes in history.items():
        for change in changes:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(change["time"]))
            console.print(f"{name}: {when} v{change['version']} serves ({change['reason']}) {printable(change['detail'])}",
                          markup=False, highlight=False)
    return 0


def run_retrain(args) -> int:
    return _command(args, "retrain", args.model, {})


def run_rollback(args) -> int:
    return _command(args, "rollback", args.model, {"to": args.to})


def run_promote(args) -> int:
    return _command(args, "promote", args.model, {"version": args.version})


def _command(args, kind: str, model: str, payload: dict) -> int:
    """Run a command here, or hand it to the ``watch`` process that holds the folder."""
    monitor = Monitor(args.data_dir, args.state)
    try:
        monitor.config.model(model)
        try:
            monitor.acquire()
        except MonitorBusy:
            command_id = monitor.store.add_command(kind, model, payload)
            print(f"a running driftdeck watches {args.data_dir}; handed the {kind} to it…", file=sys.stderr)
            deadline = time.monotonic() + REMOTE_WAIT_SECONDS
            while time.monotonic() < deadline:
                status, result = monitor.store.command_outcome(command_id)
                if status != "pending":
                    if status == "failed":
                        raise CommandFailed(result)
                    print(result)
                    return 0
                time.sleep(0.2)
            raise CommandFailed(f"the running driftdeck did not answer the {kind} within {REMOTE_WAIT_SECONDS} s")
        monitor.subscribe(_progress_printer)
        print(monitor.execute(kind, model, payload))
        return 0
    finally:
        monitor.close()


def _progress_printer(event: Event) -> None:
    if event.kind in ERROR_KINDS:
        print(printable(event.message), file=sys.stderr)


def run_predict(args) -> int:
    from app.serving import write_table

    monitor = Monitor(args.data_dir, args.state)
    try:
        predictions = monitor.predict_file(args.model, args.input, args.version)
    finally:
        monitor.close()
    text = write_table(predictions, args.out)
    if text is not None:
        sys.stdout.write(text)
    else:
        print(f"wrote {len(predictions):,} predictions to {args.out}", file=sys.stderr)
    return 0


def run_export(args) -> int:
    monitor = Monitor(args.data_dir, args.state)
    try:
        written = monitor.export(args.model, args.out, args.version)
    finally:
        monitor.close()
    for path in written:
        print(path)
    return 0


def run_validate(args) -> int:
    monitor = Monitor(args.data_dir, args.state)
    try:
        names = [monitor.config.model(args.model).name] if args.model else list(monitor.runners)
        results = [monitor.validate(name) for name in names]
    finally:
        monitor.close()
    if args.json:
        print(json.dumps([result.to_dict() for result in results], indent=2, default=str))
    else:
        for result in results:
            print(result.summary)
    return 1 if any(result.regression for result in results) else 0


def run_replay(args) -> int:
    from app.replay import replay

    replay(args.src, args.dest, interval=args.interval, start=args.start, progress=print)
    return 0


def run_demo(args) -> int:
    from app.demo import run_demo as demo

    return demo(args.scenario, args.speed, headless=args.headless, as_json=args.json)


if __name__ == "__main__":
    sys.exit(main())
