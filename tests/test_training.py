"""The training worker: jobs that share batches, a worker that dies or is cancelled, work done meanwhile."""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from app.snapshots import load_trusted
from app.training import Trainer, TrainingFailed, TrainJob, _Worker, fit_job
from tests import faults


def rows(seed: int, n: int = 50) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"x": rng.normal(size=n), "color": rng.choice(["red", "blue"], n), "label": rng.integers(0, 2, n)})


def job(parts: dict[str, pd.DataFrame], positions: np.ndarray | None = None) -> TrainJob:
    return TrainJob(task="classification", estimator="logistic_regression", params={},
                    schema={"x": "numeric", "color": "categorical"}, target="label",
                    parts=list(parts.items()), positions=positions)


class RecordingConnection:
    def __init__(self) -> None:
        self.sent: list[tuple[TrainJob, list[str]]] = []

    def send(self, message) -> None:
        self.sent.append(message)


@pytest.fixture
def trainer_with():
    """``trainer_with(fit)``: a Trainer running ``fit``, its worker stopped after the test."""
    made: list[Trainer] = []

    def make(fit=fit_job, **options) -> Trainer:
        made.append(Trainer(fit=fit, **options))
        return made[-1]

    yield make
    for trainer in made:
        trainer.close()


def test_a_batch_shared_by_consecutive_jobs_is_sent_once():
    """The worker keeps the rows of its last two jobs; the parent sends only what it lacks."""
    worker = _Worker(process=None, connection=RecordingConnection())
    batches = {key: rows(seed) for seed, key in enumerate("abcde")}
    for keys in ("ab", "bc", "ad", "e", "b"):
        worker.send(job({key: batches[key] for key in keys}))
    sent = [({key: part is not None for key, part in message.parts}, keep) for message, keep in worker.connection.sent]
    assert sent == [
        ({"a": True, "b": True}, ["a", "b"]),
        ({"b": False, "c": True}, ["a", "b", "c"]),
        ({"a": False, "d": True}, ["b", "c", "a", "d"]),
        ({"e": True}, ["a", "d", "e"]),
        ({"b": True}, ["e", "b"]),  # let go two jobs ago
    ]


def test_the_worker_fits_on_exactly_the_rows_the_parent_chose(trainer_with):
    trainer = trainer_with(faults.frame_fit)
    a, b, c = rows(0), rows(1), rows(2)
    first = trainer.run(job({"a": a, "b": b})).model
    pd.testing.assert_frame_equal(first, pd.concat([a, b], ignore_index=True))
    order = np.random.default_rng(3).permutation(100)[:70]
    second = trainer.run(job({"b": b, "c": c}, positions=order)).model  # b comes from the worker's copy
    pd.testing.assert_frame_equal(second, pd.concat([b, c], ignore_index=True).take(order))


def test_a_worker_killed_while_idle_is_replaced_by_the_next_job(trainer_with):
    trainer = trainer_with(faults.frame_fit)
    trainer.start()
    os.kill(trainer._worker.process.pid, signal.SIGKILL)
    trainer._worker.process.join(timeout=5)
    assert len(trainer.run(job({"a": rows(0)})).model) == 50


def test_a_cancelled_job_kills_its_worker_and_the_next_job_runs(trainer_with):
    trainer = trainer_with(faults.slow_fit)
    trainer.start()
    first_worker = trainer._worker.process
    threading.Timer(0.5, trainer.cancel.set).start()
    with pytest.raises(TrainingFailed, match="cancelled"):
        trainer.run(job({"a": rows(0)}))
    assert not first_worker.is_alive()
    trainer.fit = faults.frame_fit  # the next worker serves the new fit function
    assert len(trainer.run(job({"a": rows(0)})).model) == 50


def test_meanwhile_runs_while_the_worker_fits(trainer_with, tmp_path):
    """The fit waits for a file that only ``meanwhile`` writes: it sees it only if the two overlap."""
    marker = tmp_path / "meanwhile-ran"
    trainer = trainer_with(faults.marker_fit)
    fitted = trainer.run(replace(job({"a": rows(0)}), params={"marker": str(marker)}), meanwhile=marker.touch)
    assert fitted.model is True


def test_the_worker_hands_back_the_pipeline_and_its_skops_bytes(trainer_with):
    trainer = trainer_with()
    fitted = trainer.run(job({"a": rows(0, 200)}))
    assert fitted.fit_seconds > 0
    reloaded = load_trusted(fitted.data)
    frame = rows(1, 20)
    assert (reloaded.predict(frame[["x", "color"]]) == fitted.model.predict(frame[["x", "color"]])).all()


def test_a_failed_fit_is_a_message_and_its_traceback_goes_to_the_log_not_the_terminal(trainer_with, tmp_path, capfd):
    log = tmp_path / "training.log"
    trainer = trainer_with(faults.raising_fit, log=log)
    with pytest.raises(TrainingFailed, match="RuntimeError: boom"):
        trainer.run(job({"a": rows(0)}))
    assert "Traceback" in log.read_text() and "RuntimeError: boom" in log.read_text()
    assert "Traceback" not in capfd.readouterr().err


def test_a_run_with_nothing_new_starts_no_training_server(tmp_path) -> None:
    """``watch --once`` on a folder it has read waited for a training server it never used before closing it."""
    from app.engine.monitor import Monitor
    from tests.conftest import make_batch, write_batch, write_config

    data = tmp_path / "data"
    data.mkdir()
    write_config(data)
    write_batch(data, "b0.csv", make_batch(0))
    first = Monitor(data)
    try:
        first.run_once()
        assert first.trainer._worker is not None  # a new batch: the server was started and trained
    finally:
        first.close()
    again = Monitor(data)
    try:
        again.run_once()
        assert "driftdeck-training-server" not in {thread.name for thread in threading.enumerate()}
        assert again.trainer._worker is None
    finally:
        again.close()
