"""A data folder's config, state paths, store and snapshots, opened together.

The monitor opens its workspace for writing (the state folders are made
owner-only, the store migrated). ``status``, ``snapshots``, ``predict`` and
``export`` open it read-only: they change nothing under the data folder, not a
folder's mode, not the store's schema, not the serving files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from app.commands import CommandFailed
from app.config import Config, load_config, training_config_changes
from app.engine.records import BatchResult
from app.ingest import FileChanged, read_batch
from app.readers import UnreadableFile
from app.registry import Registry, StatePaths
from app.serving import export_files, model_card, score
from app.snapshots import SnapshotError
from app.store import Store
from app.validation import InvalidBatch


@dataclass(frozen=True)
class Workspace:
    data_dir: Path
    config: Config
    paths: StatePaths
    store: Store
    registry: Registry

    @classmethod
    def open(cls, data_dir: Path, state_dir: Path | None = None, *, read_only: bool = False) -> "Workspace":
        """``state_dir`` defaults to ``DATA_DIR/.driftdeck``."""
        folder = Path(data_dir).resolve()
        if not folder.is_dir():
            raise FileNotFoundError(f"{data_dir}: no such folder")
        config = load_config(folder)
        paths = StatePaths(Path(state_dir).resolve() if state_dir else folder / ".driftdeck")
        if read_only:
            paths.check(folder)
        else:
            paths.create(folder)
        store = Store(paths.database, read_only=read_only)
        return cls(folder, config, paths, store, Registry(store, paths))

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "Workspace":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def version_or_serving(self, model: str, version: int | None) -> int:
        """``version`` if ``model`` has a usable one by that number; without it, the serving version."""
        self.config.model(model)
        if version is None:
            version = self.store.serving_version(model)
            if version is None:
                raise CommandFailed(f"{model} has no serving model yet")
            return version
        record = self.store.snapshot(model, version)
        if record is None or not record.path:
            raise CommandFailed(f"{model} has no usable version {version}")
        return version

    def predict_file(self, model: str, path: Path, version: int | None = None) -> pd.DataFrame:
        """Score a batch file with the serving (or given) version, after the watcher's validation."""
        chosen = self.version_or_serving(model, version)
        if changes := training_config_changes(self.store.snapshot(model, chosen).data.get("config"), self.config):
            raise CommandFailed(f"{model} v{chosen} was trained on another config ({'; '.join(changes)}): it cannot score"
                                f" under this one; retrain it: driftdeck retrain {self.data_dir} --model {model}")
        try:
            _, batch = read_batch(Path(path), self.config)
        except (UnreadableFile, FileChanged) as error:
            raise CommandFailed(f"{Path(path).name}: {error}") from None
        if isinstance(batch, InvalidBatch):
            raise CommandFailed(f"{Path(path).name} fails validation: {'; '.join(batch.reasons)}")
        try:
            loaded = self.registry.load(model, chosen)
        except SnapshotError as error:
            raise CommandFailed(str(error)) from None
        return score(loaded, batch.frame, chosen, self.config)

    def export(self, model: str, out: Path, version: int | None = None) -> list[Path]:
        """Write the model file, its model card (JSON and Markdown) and its reference profile to ``out``."""
        chosen = self.version_or_serving(model, version)
        record = self.store.snapshot(model, chosen)
        try:
            self.registry.load(model, chosen)
        except SnapshotError as error:
            raise CommandFailed(str(error)) from None
        recent = [BatchResult.from_dict(data) for _, _, data in self.store.results(model, limit=20)]
        card = model_card(self.config, model, record, self.store.serving_version(model), recent,
                          self.store.model_state(model))
        data = (self.paths.root / record.path).read_bytes()
        return export_files(Path(out), model, data, card, record.data.get("profile", {}))
