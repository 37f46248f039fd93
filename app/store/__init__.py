"""The state store: one SQLite database in WAL mode under the state folder.

It holds the ingested-file ledger (with the batches excluded after the
fact), per-batch results, snapshots, the serving pointer's history, each
model's current state, commands sent by other processes, and an append-only
audit log of events. Every write is one
transaction, so a crash at any point leaves a consistent store. All SQL is
parameterised. Each module of this package owns a few tables; :class:`Store`
is all of them on one connection.
"""

from __future__ import annotations

from app.store.audit import AuditLog
from app.store.history import History
from app.store.identity import StateLost
from app.store.inbox import Inbox
from app.store.ledger import Ledger
from app.store.records import (FOLDER_KEY, FileRecord, FileStat, FolderState, ModelState, ServingChange, SnapshotRecord,
                               StoredEvent)
from app.store.results import Results
from app.store.schema import SCHEMA_VERSION, StoreIncompatible

__all__ = [
    "FOLDER_KEY", "SCHEMA_VERSION", "FileRecord", "FileStat", "FolderState", "ModelState", "ServingChange", "SnapshotRecord", "StateLost", "Store",
    "StoreIncompatible", "StoredEvent",
]


class Store(Ledger, Results, History, AuditLog, Inbox):
    """Thread-safe access to ``state.db``; one connection guarded by a lock.

    Other processes (the CLI while ``watch`` runs) open the same file; SQLite's
    WAL mode and a busy timeout let them take turns. Before every write the
    store checks that its folder and database are still the ones it opened
    (device and inode, and a SQLite header): once they are not, it writes
    nothing more, not even at close (see :class:`StateLost`). ``read_only``
    opens it for commands that only read: nothing on disk changes, not even a
    migration.
    """
