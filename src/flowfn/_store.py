"""Where durable runs are kept: the checkpoint store protocol and its SQLite implementation.

A store holds runs by ``run_id``. For each run: what it is (the flow's name and shape, the
serializer, its status), the completed steps (their place in the flow, the action each
returned and the shared store after it) and the finished items of its batches (their
results). Records arrive in batches from one writer thread per run; each batch is one
transaction, so a process killed at any moment leaves either all of a batch or none of it.

Values are serialised by a :class:`Serializer`: pickle by default (a checkpoint file is
then trusted code, as any pickle is: never load one from someone you do not trust), or
JSON for plain data.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

from ._errors import FlowError

if TYPE_CHECKING:
    import sqlite3
    from pathlib import Path

__all__ = [
    "FORMAT",
    "CheckpointStore",
    "JSONSerializer",
    "PickleSerializer",
    "Record",
    "RunInfo",
    "Saved",
    "Serializer",
    "SQLiteStore",
]

#: The layout of checkpoint files this flowfn writes; files of another layout are refused.
FORMAT = 1
_APPLICATION_ID = 0x666C6F77  # "flow": marks an SQLite file as a flowfn checkpoint


@runtime_checkable
class Serializer(Protocol):
    """Turns values into bytes and back; ``name`` is recorded with each run."""

    name: str

    def dumps(self, value: Any) -> bytes:
        """``value`` as bytes; raise ``TypeError`` (or ``ValueError``) for what it cannot save."""
        ...

    def loads(self, data: bytes) -> Any:
        """The value ``dumps`` made ``data`` from."""
        ...


class PickleSerializer:
    """Any picklable Python object. Loading a pickle runs code: trust the file."""

    name = "pickle"

    def dumps(self, value: Any) -> bytes:
        """``pickle.dumps`` with the highest protocol."""
        import pickle

        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def loads(self, data: bytes) -> Any:
        """``pickle.loads``: only for files you trust."""
        import pickle

        return pickle.loads(data)

    def __repr__(self) -> str:
        return "PickleSerializer()"


class JSONSerializer:
    """JSON values only (dicts with str keys, lists, str, numbers, bools, None); tuples come
    back as lists. Safe to load from anywhere."""

    name = "json"

    def dumps(self, value: Any) -> bytes:
        """Compact JSON; a ``TypeError`` for non-JSON values or non-str dict keys, a
        ``ValueError`` for NaN and infinities."""
        import json

        _check_keys(value)
        return json.dumps(value, allow_nan=False, separators=(",", ":")).encode()

    def loads(self, data: bytes) -> Any:
        """``json.loads``."""
        import json

        return json.loads(data)

    def __repr__(self) -> str:
        return "JSONSerializer()"


def _check_keys(value: Any) -> None:
    """Refuse dict keys that JSON would turn into strings (1 and "1" would merge)."""
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise TypeError(
                        f"JSON keys must be str, got {type(key).__name__} {key!r}: it would "
                        f"come back as a str (use str keys, or the pickle serializer)"
                    )
                todo.append(child)
        elif isinstance(item, (list, tuple)):
            todo.extend(item)


class Record(NamedTuple):
    """One thing to save. ``kind`` is ``"step"`` (a completed step: ``action`` set,
    ``done=True``), ``"progress"`` (the shared store during a batch flow, ``done=False``,
    with the items finished by then) or ``"items"`` (finished items of a batch).

    ``items`` is a serialised list of ``(index, result)`` pairs, ``count`` long: items
    travel in chunks, serialised once per chunk."""

    kind: str
    seq: int
    position: tuple[int, ...]
    nodes: tuple[int, ...] = ()
    action: str | None = None
    shared: bytes | None = None
    done: bool = True
    items: bytes | None = None
    count: int = 0  # type: ignore[assignment]  # a field, shadowing tuple.count
    node: str = ""
    expires: float | None = None  # a "cache" record: its key is in node, its value in shared
    #: On the "progress" record written when a batch starts: how many items it has (None
    #: when its items are pulled lazily and their number is not known).
    total: int | None = None
    #: On "step" and "progress" records: which ``into=`` node wrote which key of the store
    #: (JSON: {key: node indices}), so that a loop back to that node may write it again.
    owners: str | None = None


@dataclass
class Saved:
    """What a store holds for a run, as :meth:`CheckpointStore.begin` hands it back."""

    run_id: str
    status: str  # "running", "failed", "interrupted", "paused", "done"
    shape: str
    serializer: str
    flowfn_format: int
    initial: bytes | None = None
    #: The latest step or progress record (None if no step finished yet).
    last: Record | None = None
    #: Finished batch items: {batch position: [serialised chunks of (index, result)]}.
    items: dict[tuple[int, ...], list[bytes]] = field(default_factory=dict)
    detail: bytes | None = None


class RunInfo(NamedTuple):
    """A run, as ``flowfn runs list`` shows it."""

    run_id: str
    flow: str
    status: str
    created: float
    updated: float
    steps: int
    items: int
    error: str | None
    target: str | None
    serializer: str


@runtime_checkable
class CheckpointStore(Protocol):
    """What ``run(checkpoint=...)`` needs from a store; :class:`SQLiteStore` is the built-in.

    ``begin`` and ``finish`` are called on the event loop's thread, ``save`` on the run's
    writer thread (one per run). A store for another database implements these six methods.
    """

    serializer: Serializer

    def begin(
        self,
        run_id: str,
        *,
        flow: str,
        shape: str,
        initial: bytes,
        target: str | None,
        meta: Mapping[str, str] | None = None,
    ) -> Saved | None:
        """Claim ``run_id`` for this process until :meth:`release` (a ``FlowError`` if
        another process or run holds it) and return what was saved, or None for a new run.
        ``meta`` says how the run was started (``backend``, ``durability``), for resuming it
        the same way."""
        ...

    def save(self, run_id: str, records: Sequence[Record]) -> None:
        """Save ``records`` in one transaction: all of them or, on a crash, none."""
        ...

    def finish(self, run_id: str, status: str, error: str | None, detail: bytes | None) -> None:
        """Record how the run ended (or paused)."""
        ...

    def release(self, run_id: str) -> None:
        """Give up the claim on ``run_id``."""
        ...

    def runs(self) -> list[RunInfo]:
        """Every run in the store, oldest first."""
        ...

    def cache_get(self, key: str, now: float) -> bytes | None:
        """The value cached under ``key`` that has not expired by ``now``, or None."""
        ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, flow TEXT NOT NULL, shape TEXT NOT NULL,
    serializer TEXT NOT NULL, status TEXT NOT NULL, created REAL NOT NULL,
    updated REAL NOT NULL, initial BLOB, error TEXT, detail BLOB, target TEXT
);
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL, seq INTEGER NOT NULL, position TEXT NOT NULL, nodes TEXT NOT NULL,
    node TEXT NOT NULL, action TEXT, done INTEGER NOT NULL, shared BLOB, owners TEXT,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE IF NOT EXISTS items (
    run_id TEXT NOT NULL, batch TEXT NOT NULL, chunk INTEGER NOT NULL, count INTEGER NOT NULL,
    results BLOB NOT NULL, PRIMARY KEY (run_id, batch, chunk)
);
CREATE TABLE IF NOT EXISTS cache (
    key TEXT PRIMARY KEY, value BLOB NOT NULL, created REAL NOT NULL, expires REAL
);
"""

# Runs claimed by this process: POSIX record locks do not exclude the process holding them.
_claimed: set[tuple[str, str]] = set()
_claimed_lock = threading.Lock()


class SQLiteStore:
    """Runs kept in one SQLite file (WAL mode), created on first use.

    ``SQLiteStore("runs.db")`` is what ``run(checkpoint="runs.db")`` uses. Several runs and
    several processes may share a file; a run is claimed by one process at a time (a lock
    on ``<file>-flowfn.lock`` that the system releases if the process dies).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        serializer: Serializer | None = None,
        target: str | None = None,
    ) -> None:
        from pathlib import Path

        self.path = Path(path)
        #: Where the flow is (``module:name``), recorded with new runs for ``flowfn runs
        #: resume``; ``flowfn run --checkpoint`` sets it.
        self.target = target
        self.serializer: Serializer = serializer or PickleSerializer()
        if not isinstance(self.serializer, Serializer):
            raise TypeError(
                f"SQLiteStore: serializer must have name, dumps() and loads(), got "
                f"{self.serializer!r}"
            )
        self._local = threading.local()
        self._locks: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r}, serializer={self.serializer!r})"

    # -- connections: one per thread -----------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = self._connect()
            self._local.db = db
        return db

    def _connect(self) -> sqlite3.Connection:
        import sqlite3

        where = str(self.path)
        try:
            db = sqlite3.connect(where, timeout=30, isolation_level=None)
            # Tables first: a creator commits them with the mark, so the mark read after
            # them is at least as new (reading it first could miss it, then see tables).
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
            application_id = db.execute("PRAGMA application_id").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise FlowError(
                f"checkpoint {where!r} is not a flowfn checkpoint: SQLite cannot read it "
                f"({exc}). Point checkpoint= at a new file, or at one flowfn wrote."
            ) from None
        if application_id != _APPLICATION_ID and tables:
            db.close()
            raise FlowError(
                f"checkpoint {where!r} is an SQLite database of something else (tables "
                f"{sorted(tables)[:5]}), not a flowfn checkpoint; use another file"
            )
        _retry_busy(lambda: db.execute("PRAGMA journal_mode=WAL"))
        db.execute("PRAGMA synchronous=NORMAL")
        if application_id != _APPLICATION_ID:
            # One transaction: another process sees no tables, or all of them with the
            # mark; two creators at once take turns, and the second changes nothing.
            db.executescript(
                f"BEGIN IMMEDIATE; {_SCHEMA} PRAGMA application_id={_APPLICATION_ID}; "
                f"INSERT OR IGNORE INTO meta VALUES ('format', '{FORMAT}'); COMMIT;"
            )
        found = db.execute("SELECT value FROM meta WHERE key='format'").fetchone()
        if found is None or found[0] != str(FORMAT):
            db.close()
            raise FlowError(
                f"checkpoint {where!r} was written in checkpoint format {found and found[0]}, "
                f"and this flowfn reads format {FORMAT}; finish its runs with the flowfn "
                f"that wrote it, or start afresh in a new file"
            )
        columns = {row[1] for row in db.execute("PRAGMA table_info(steps)")}
        if "owners" not in columns:  # written before into= owners were recorded
            with contextlib.suppress(sqlite3.OperationalError):  # another process added it
                _retry_busy(lambda: db.execute("ALTER TABLE steps ADD COLUMN owners TEXT"))
        return db

    # -- the protocol ----------------------------------------------------------------------

    def begin(
        self,
        run_id: str,
        *,
        flow: str,
        shape: str,
        initial: bytes,
        target: str | None,
        meta: Mapping[str, str] | None = None,
    ) -> Saved | None:
        """Claim ``run_id`` with a lock file beside the database and return what was saved.

        A :class:`~flowfn.FlowError` if another process, or another run in this one, holds it.
        """
        import json

        db = self._db()
        self._claim(run_id)
        try:
            row = db.execute(
                "SELECT status, shape, serializer, initial, detail FROM runs WHERE run_id=?",
                (run_id,),
            ).fetchone()
            now = time.time()
            if row is None:
                with _transaction(db):
                    db.execute(
                        "INSERT INTO runs (run_id, flow, shape, serializer, status, created, "
                        "updated, initial, target) VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?)",
                        (run_id, flow, shape, self.serializer.name, now, now, initial, target),
                    )
                return None
            status, saved_shape, serializer, saved_initial, detail = row
            saved = Saved(run_id, status, saved_shape, serializer, FORMAT, saved_initial)
            saved.detail = detail
            last = db.execute(
                "SELECT seq, position, nodes, node, action, done, shared, owners FROM steps "
                "WHERE run_id=? ORDER BY seq DESC LIMIT 1",
                (run_id,),
            ).fetchone()
            if last is not None:
                seq, position, nodes, node, action, done, shared, owners = last
                saved.last = Record(
                    "step" if done else "progress",
                    seq,
                    tuple(json.loads(position)),
                    tuple(json.loads(nodes)),
                    action,
                    shared,
                    bool(done),
                    node=node,
                    owners=owners,
                )
            for batch, results in db.execute(
                "SELECT batch, results FROM items WHERE run_id=? ORDER BY chunk", (run_id,)
            ):
                saved.items.setdefault(tuple(json.loads(batch)), []).append(results)
            return saved
        except BaseException:
            self.release(run_id)
            raise

    def save(self, run_id: str, records: Sequence[Record]) -> None:
        """Save ``records`` in one SQLite transaction: all of them or, on a crash, none."""
        import json

        db = self._db()
        steps: list[tuple[Any, ...]] = []
        items: list[tuple[Any, ...]] = []
        cached: list[tuple[Any, ...]] = []
        latest = -1
        for record in records:
            if record.kind in ("step", "progress"):
                steps.append(
                    (
                        run_id,
                        record.seq,
                        json.dumps(record.position),
                        json.dumps(record.nodes),
                        record.node,
                        record.action,
                        int(record.done),
                        record.shared,
                        record.owners,
                    )
                )
                latest = max(latest, record.seq)
            if record.kind == "cache":
                cached.append((record.node, record.shared, time.time(), record.expires))
            if record.items is not None:
                batch = json.dumps(record.position)
                items.append((run_id, batch, record.count, record.items))
        with _transaction(db):
            if cached:
                db.executemany("INSERT OR REPLACE INTO cache VALUES (?, ?, ?, ?)", cached)
            if items:
                db.executemany(
                    "INSERT INTO items (run_id, batch, count, results, chunk) VALUES (?, ?, ?, ?, "
                    "(SELECT COALESCE(MAX(chunk), 0) + 1 FROM items WHERE run_id=?1))",
                    items,
                )
            if steps:
                db.executemany(
                    "INSERT OR REPLACE INTO steps (run_id, seq, position, nodes, node, action, "
                    "done, shared, owners) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    steps,
                )
                # Only the latest shared store is needed to resume; older ones are history.
                db.execute(
                    "UPDATE steps SET shared=NULL WHERE run_id=? AND seq<? AND shared IS NOT NULL",
                    (run_id, latest),
                )
            db.execute("UPDATE runs SET updated=? WHERE run_id=?", (time.time(), run_id))

    def finish(self, run_id: str, status: str, error: str | None, detail: bytes | None) -> None:
        """Record how the run ended (or paused)."""
        db = self._db()
        with _transaction(db):
            db.execute(
                "UPDATE runs SET status=?, error=?, detail=?, updated=? WHERE run_id=?",
                (status, error, detail, time.time(), run_id),
            )

    def release(self, run_id: str) -> None:
        """Give up the claim on ``run_id``; another process may resume it from now on."""
        lock = self._locks.pop(run_id, None)
        if lock is not None:
            _unlock(lock)
        with _claimed_lock:
            _claimed.discard((str(self.path.resolve()), run_id))

    def runs(self) -> list[RunInfo]:
        """Every run in the file, oldest first (what ``flowfn runs`` lists)."""
        db = self._db()
        rows = db.execute(
            "SELECT r.run_id, r.flow, r.status, r.created, r.updated, r.error, r.target, "
            "r.serializer, "
            "(SELECT COUNT(*) FROM steps s WHERE s.run_id=r.run_id AND s.done=1), "
            "(SELECT COALESCE(SUM(count), 0) FROM items i WHERE i.run_id=r.run_id) "
            "FROM runs r ORDER BY r.created"
        ).fetchall()
        return [
            RunInfo(run_id, flow, status, created, updated, steps, items, error, target, kind)
            for run_id, flow, status, created, updated, error, target, kind, steps, items in rows
        ]

    def cache_get(self, key: str, now: float) -> bytes | None:
        """The value cached under ``key`` that has not expired by ``now``, or None."""
        row = (
            self._db()
            .execute(
                "SELECT value FROM cache WHERE key=? AND (expires IS NULL OR expires > ?)",
                (key, now),
            )
            .fetchone()
        )
        return None if row is None else bytes(row[0])

    def detail(self, run_id: str) -> bytes | None:
        """How the run ended, serialised: a paused run's questions, a finished run's result."""
        row = self._db().execute("SELECT detail FROM runs WHERE run_id=?", (run_id,)).fetchone()
        return None if row is None or row[0] is None else bytes(row[0])

    def steps(self, run_id: str) -> list[tuple[int, tuple[int, ...], str, str | None, bool]]:
        """(seq, position, node, action, done) of every recorded step of ``run_id``."""
        import json

        rows = self._db().execute(
            "SELECT seq, position, node, action, done FROM steps WHERE run_id=? ORDER BY seq",
            (run_id,),
        )
        return [(seq, tuple(json.loads(p)), n, a, bool(d)) for seq, p, n, a, d in rows]

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # -- claiming a run --------------------------------------------------------------------

    def _claim(self, run_id: str) -> None:
        key = (str(self.path.resolve()), run_id)
        with _claimed_lock:
            if key in _claimed:
                raise FlowError(
                    f"run {run_id!r} in {str(self.path)!r} is already running in this "
                    f"process; wait for it to end, or use another run_id"
                )
            lock = _lock(self.path, run_id)
            if lock is None:
                raise FlowError(
                    f"run {run_id!r} in {str(self.path)!r} is running in another process; "
                    f"wait for it to end (or stop it) before resuming it"
                )
            _claimed.add(key)
            self._locks[run_id] = lock


def _retry_busy(statement: Any, seconds: float = 30.0) -> Any:
    """Run ``statement()`` again while SQLite says the file is locked (switching to WAL
    needs a moment alone with the file, and waits for no busy handler)."""
    import sqlite3

    deadline = time.monotonic() + seconds
    while True:
        try:
            return statement()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _transaction(db: sqlite3.Connection) -> Any:
    class Transaction:
        def __enter__(self) -> None:
            db.execute("BEGIN IMMEDIATE")

        def __exit__(self, kind: object, exc: object, tb: object) -> None:
            db.execute("COMMIT" if kind is None else "ROLLBACK")

    return Transaction()


# One open lock file per path for the life of the process: closing any descriptor of a
# file drops all of this process's POSIX locks on it, so descriptors are never closed.
_lock_files: dict[str, int] = {}


def _lock(path: Path, run_id: str) -> Any:
    """An exclusive lock on one byte of ``<path>-flowfn.lock`` chosen by ``run_id``, or
    None if another process holds it. The system drops it when this process dies."""
    import zlib

    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: claims hold within this process only
        return True
    name = f"{path.resolve()}-flowfn.lock"
    fd = _lock_files.get(name)
    if fd is None:
        fd = _lock_files[name] = os.open(name, os.O_RDWR | os.O_CREAT, 0o644)
    offset = zlib.crc32(run_id.encode())
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
    except OSError:
        return None
    return (fd, offset)


def _unlock(lock: Any) -> None:
    if isinstance(lock, tuple):
        import fcntl

        fd, offset = lock
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, offset)
