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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

from .._engine.errors import FlowError

if TYPE_CHECKING:
    import sqlite3

__all__ = [
    "FORMAT",
    "BatchInfo",
    "CheckpointStore",
    "JSONSerializer",
    "PickleSerializer",
    "Record",
    "RunInfo",
    "Saved",
    "Serializer",
    "SQLiteStore",
    "load_saved",
]

#: The layout of checkpoint files this flowfn writes; format 1 files are brought up to it
#: (``flowfn runs list/show`` read them as they are), newer ones are refused.
FORMAT = 2
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
    """A run, as ``flowfn runs list`` shows it. ``status`` is what the run last recorded;
    ``state`` is the truth, from the run's lock: ``"live"`` (a process holds it: ``holder``
    says which), ``"crashed"`` (recorded as running, but no process holds it), or the
    status it ended with: ``"failed"``, ``"interrupted"``, ``"paused"``, ``"finished"``."""

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
    state: str = ""
    #: The process that started (or resumed) it last: ``"pid 123 on host"``.
    holder: str | None = None
    backend: str | None = None
    durability: str | None = None
    #: Started with ``share=True``: its parallel batches are shared with helpers.
    share: bool = False


def run_meta(run_id: str, how: str | None) -> tuple[str | None, str | None, bool]:
    """(backend, durability, share) of a run's ``meta`` column (a JSON object; anything else
    reads as empty); a ``TypeError`` naming the run if the backend or durability is not text."""
    import json

    try:
        meta = json.loads(how) if how else {}
    except ValueError:
        meta = {}
    meta = meta if isinstance(meta, dict) else {}
    for key in ("backend", "durability"):
        if not isinstance(meta.get(key), (str, type(None))):
            raise TypeError(f"run {run_id!r}: its {key} is {_short(meta[key])}, not text")
    return meta.get("backend"), meta.get("durability"), meta.get("share") == "yes"


class BatchInfo(NamedTuple):
    """A batch of a run, as ``flowfn runs show`` shows it (``SQLiteStore.batches``).

    Attributes:
        position: its place in the flow (the step counters of the walks around it).
        node: the name of its node.
        recorded: how many of its items are recorded as finished.
        total: how many items it has (None when they are pulled lazily).
        finished: whether its step finished (then every item did).
    """

    position: tuple[int, ...]
    node: str
    recorded: int
    total: int | None
    finished: bool


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
    updated REAL NOT NULL, initial BLOB, error TEXT, detail BLOB, target TEXT,
    meta TEXT, holder TEXT, questions TEXT
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
# Format 2 (this one) adds to format 1: how a run was started (meta: backend, durability),
# who holds it (holder: pid and host), a paused run's questions as JSON text (shown without
# unpickling anything), each batch's node and item count, and with each step which into=
# node wrote which key (owners).
_BATCHES = """
CREATE TABLE IF NOT EXISTS batches (
    run_id TEXT NOT NULL, position TEXT NOT NULL, node TEXT NOT NULL, total INTEGER,
    PRIMARY KEY (run_id, position)
);
"""
_FROM_FORMAT_1 = (
    "ALTER TABLE runs ADD COLUMN meta TEXT; ALTER TABLE runs ADD COLUMN holder TEXT; "
    "ALTER TABLE runs ADD COLUMN questions TEXT; ALTER TABLE steps ADD COLUMN owners TEXT; "
    + _BATCHES
)
_READABLE = ("1", str(FORMAT))  # formats `flowfn runs list/show` read as they are
#: The recorded statuses ``state`` reports as they are ("done" is shown as "finished").
_STATES = {"done": "finished", "failed": "failed", "interrupted": "interrupted", "paused": "paused"}

_NONE = type(None)
#: The columns of ``runs`` that :meth:`SQLiteStore.runs` reads, and the types they may hold.
_RUN_COLUMNS: dict[str, tuple[type, ...]] = {
    "run_id": (str,), "flow": (str,), "status": (str,), "created": (int, float),
    "updated": (int, float), "error": (str, _NONE), "target": (str, _NONE),
    "serializer": (str,), "meta": (str, _NONE), "holder": (str, _NONE),
}  # fmt: skip


def _short(value: Any) -> str:
    """``repr(value)``, cut to a length a message can hold."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# Runs claimed by this process (POSIX record locks do not exclude the process holding them),
# and the open lock file of each checkpoint with how many users it has: closing any
# descriptor of a file drops all of this process's POSIX locks on it, so a lock file is
# closed only when no run of this process holds a lock in it and no inspection tests one.
_claimed: set[tuple[str, str]] = set()
_claimed_lock = threading.Lock()
_lock_files: dict[str, list[int]] = {}  # lock file -> [descriptor, users]


def batch_infos(
    known: dict[str, tuple[str, int | None]],
    recorded: dict[str, Any],
    steps: dict[str, tuple[str, bool]],
) -> list[BatchInfo]:
    """The batches of a run, in the order they ran, from what a store read: each batch's
    node and item count (by place, as JSON text), its items recorded, and its step's node
    and whether it finished."""
    import json

    found = []
    for position in set(known) | set(recorded):
        node, total = known.get(position, (steps.get(position, ("?", False))[0], None))
        finished = steps.get(position, ("", False))[1]
        place = tuple(int(p) for p in json.loads(position))
        found.append(BatchInfo(place, node, int(recorded.get(position, 0)), total, finished))
    return sorted(found)


def delete_old_runs(store: Any, older_than: float, status: str | None, now: float) -> list[str]:
    """Delete the runs of ``store`` last updated more than ``older_than`` seconds before
    ``now`` (only those whose ``state`` is ``status``, if given); live runs are kept, and so
    is one that went live meanwhile. Returns the deleted run ids (what ``prune`` shares)."""
    deleted = []
    for run in store.runs():
        if run.state == "live" or now - run.updated <= older_than:
            continue
        if status is not None and run.state != status:
            continue
        with contextlib.suppress(FlowError):  # went live meanwhile: kept
            if store.delete(run.run_id):
                deleted.append(run.run_id)
    return deleted


def load_saved(serializer: Serializer, blob: bytes, *, what: str, where: str) -> Any:
    """``serializer.loads(blob)``, or a :class:`~flowfn.FlowError` naming the checkpoint file
    ``where`` and ``what`` was in the blob (``"the shared store of run 'x'"``): a damaged row,
    or values whose classes are gone, are reported before any step runs."""
    try:
        return serializer.loads(blob)
    except Exception as exc:
        raise FlowError(
            f"checkpoint {where!r}: {what} cannot be read ({type(exc).__name__}: {exc}); the "
            f"file is damaged, was written by another program or serializer, or holds "
            f"values of classes this code no longer has. Resume from an intact copy, with "
            f"the code that wrote it, or start a new run_id"
        ) from None


class SQLiteStore:
    """Runs kept in one SQLite file (WAL mode), created on first use.

    ``SQLiteStore("runs.db")`` is what ``run(checkpoint="runs.db")`` uses. Several runs and
    several processes may share a file; a run is claimed by one process at a time (a lock
    on its own byte of ``<file>-flowfn.lock``, which the system releases if the process
    dies). ``read_only=True`` opens the file for inspection only (``runs``, ``batches``,
    ``questions``, ``steps``): nothing is written, nothing is unpickled, and a read-only
    file can be read.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        serializer: Serializer | None = None,
        target: str | None = None,
        read_only: bool = False,
    ) -> None:
        from pathlib import Path

        #: The file as given, for messages.
        self.path = Path(path)
        # Where it is, fixed now: a node that changes the working folder (os.chdir) must
        # not move a relative checkpoint, for any thread's connection or the run's lock.
        self._file = Path(os.path.abspath(path))
        real = self._file.resolve()  # one lock for every name of the file (symlinks)
        self._key = str(real)
        self._lock_file = f"{real}-flowfn.lock"
        #: Where the flow is (``module:name``), recorded with new runs for ``flowfn runs
        #: resume``; ``flowfn run --checkpoint`` sets it.
        self.target = target
        self.read_only = read_only
        self.serializer: Serializer = serializer or PickleSerializer()
        if not isinstance(self.serializer, Serializer):
            raise TypeError(
                f"SQLiteStore: serializer must have name, dumps() and loads(), got "
                f"{self.serializer!r}"
            )
        self._local = threading.local()
        self._locks: dict[str, tuple[str, int]] = {}  # run_id -> (lock file, offset)
        self._format = FORMAT

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r}, serializer={self.serializer!r})"

    # -- connections: one per thread -----------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = self._connect_read_only() if self.read_only else self._connect()
            self._local.db = db
        return db

    def _connect(self) -> sqlite3.Connection:
        import sqlite3

        self._check_writable()
        try:
            db = sqlite3.connect(str(self._file), timeout=30, isolation_level=None)
            # Tables first: a creator commits them with the mark, so the mark read after
            # them is at least as new (reading it first could miss it, then see tables).
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
            application_id = db.execute("PRAGMA application_id").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise self._unreadable(exc) from None
        self._check_mark(db, application_id, tables)
        with self._writing():
            _retry_busy(lambda: db.execute("PRAGMA journal_mode=WAL"))
            db.execute("PRAGMA synchronous=NORMAL")
            if application_id != _APPLICATION_ID:
                # One transaction: another process sees no tables, or all of them with the
                # mark; two creators at once take turns, and the second changes nothing.
                db.executescript(
                    f"BEGIN IMMEDIATE; {_SCHEMA} {_BATCHES} "
                    f"PRAGMA application_id={_APPLICATION_ID}; "
                    f"INSERT OR IGNORE INTO meta VALUES ('format', '{FORMAT}'); COMMIT;"
                )
            found = self._format_of(db)
            if found == "1":  # an older checkpoint: add what format 2 records, keep the rest
                db.execute("BEGIN IMMEDIATE")
                if self._format_of(db) == "1":  # not migrated by another process meanwhile
                    for statement in _FROM_FORMAT_1.split(";"):
                        if statement.strip():
                            db.execute(statement)
                    db.execute("UPDATE meta SET value=? WHERE key='format'", (str(FORMAT),))
                db.execute("COMMIT")
                found = str(FORMAT)
        if found != str(FORMAT):
            db.close()
            raise self._unknown_format(found)
        return db

    def _connect_read_only(self) -> sqlite3.Connection:
        """A connection that cannot write: to a file that exists, read-only if need be."""
        import sqlite3

        where, file = str(self.path), self._file
        if file.is_dir():
            raise FlowError(f"checkpoint {where!r} is a folder, not a checkpoint file")
        if not file.is_file():
            raise FlowError(f"no checkpoint file {where!r} (looked in {file.parent})")
        if file.stat().st_size == 0:
            raise FlowError(f"checkpoint {where!r} is an empty file, not a flowfn checkpoint")
        uri = file.resolve().as_uri()
        # Without a -wal file nobody is writing (the last writer to close deletes it), and
        # the file is read as unchanging, which creates no -wal and -shm files beside it
        # (they would outlive this reader). With one, read through them; in a read-only
        # folder without a -shm file, read as unchanging all the same.
        wal = os.path.exists(f"{file}-wal")
        modes = ["?mode=ro"] if wal else []
        modes.append("?mode=ro&immutable=1")
        for mode in modes:
            try:
                db = sqlite3.connect(uri + mode, uri=True, timeout=30, isolation_level=None)
                tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
                application_id = db.execute("PRAGMA application_id").fetchone()[0]
                break
            except sqlite3.DatabaseError as exc:
                error = exc
        else:
            raise self._unreadable(error) from None
        self._check_mark(db, application_id, tables)
        if application_id != _APPLICATION_ID:
            db.close()
            raise FlowError(f"checkpoint {where!r} holds no tables: not a flowfn checkpoint")
        with self._reading():
            found = self._format_of(db)
        if found not in _READABLE:
            db.close()
            raise self._unknown_format(found)
        self._format = int(found)
        return db

    def _format_of(self, db: sqlite3.Connection) -> str | None:
        row = db.execute("SELECT value FROM meta WHERE key='format'").fetchone()
        return None if row is None else str(row[0])

    def _check_mark(self, db: sqlite3.Connection, application_id: int, tables: set[str]) -> None:
        if application_id != _APPLICATION_ID and tables:
            db.close()
            raise FlowError(
                f"checkpoint {str(self.path)!r} is an SQLite database of something else "
                f"(tables {sorted(tables)[:5]}), not a flowfn checkpoint; use another file"
            )

    def _check_writable(self) -> None:
        """Before a run writes: the folder exists, and the file and folder can be written."""
        where, file, folder = str(self.path), self._file, self._file.parent
        shown = str(self.path.parent)
        if not folder.is_dir():
            raise FlowError(
                f"checkpoint {where!r}: there is no folder {shown!r}; create it "
                f"(mkdir -p {shown!r}), or point checkpoint= at a file in a folder "
                f"that exists"
            )
        if file.is_dir():
            raise FlowError(f"checkpoint {where!r} is a folder; point checkpoint= at a file")
        if file.exists() and not os.access(file, os.W_OK):
            raise FlowError(
                f"checkpoint {where!r} is read-only, and a run writes to it: make it "
                f"writable (chmod u+w), or copy it somewhere writable. `flowfn runs list` "
                f"and `flowfn runs show` read it as it is"
            )
        if not os.access(folder, os.W_OK | os.X_OK):
            raise FlowError(
                f"checkpoint {where!r}: the folder {shown!r} is read-only, and a run "
                f"creates files there (the checkpoint, its -wal, -shm and -flowfn.lock "
                f"files); point checkpoint= at a writable folder"
            )

    def _unreadable(self, exc: Exception) -> FlowError:
        return FlowError(
            f"checkpoint {str(self.path)!r} is not a flowfn checkpoint: SQLite cannot read "
            f"it ({exc}). Point checkpoint= at a new file, or at one flowfn wrote."
        )

    def _unknown_format(self, found: str | None) -> FlowError:
        return FlowError(
            f"checkpoint {str(self.path)!r} was written in checkpoint format {found}, and "
            f"this flowfn reads formats 1 to {FORMAT}; finish its runs with the flowfn that "
            f"wrote it, or start afresh in a new file"
        )

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """SQLite's errors while writing, as a FlowError naming the file and the cause."""
        import sqlite3

        try:
            yield
        except sqlite3.Error as exc:
            text = str(exc)
            if "full" in text:
                why = "the disk is full; free some space, or point checkpoint= elsewhere"
            elif "readonly" in text or "read-only" in text:
                why = "the file or its folder is read-only; make them writable"
            else:
                why = "the file may be damaged or of another layout; use another file"
            raise FlowError(
                f"checkpoint {str(self.path)!r} cannot be written ({text}): {why}"
            ) from None

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """SQLite's and JSON's errors while reading, as a FlowError naming the file."""
        import sqlite3

        try:
            yield
        except (sqlite3.Error, ValueError, TypeError) as exc:
            raise FlowError(
                f"checkpoint {str(self.path)!r} cannot be read ({type(exc).__name__}: {exc}): "
                f"it is damaged or of another layout; resume from an intact copy, or point "
                f"checkpoint= at a new file"
            ) from None

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

        A :class:`~flowfn.FlowError` if another process, or another run in this one, holds it,
        or if the file cannot be written (naming it, and why: full, read-only, damaged).
        ``meta`` (backend, durability) and this process (pid, host) are recorded with it.
        """
        import json
        import socket

        db = self._db()
        now = time.time()
        holder = f"pid {os.getpid()} on {socket.gethostname()}"
        how = json.dumps(dict(meta or {}))
        claimed = False
        try:
            # Claimed inside the transaction that adds a new run: a refused claim (another
            # holder, a lock file this user cannot write) rolls the new row back with it.
            with self._writing(), _transaction(db):
                row = db.execute(
                    "SELECT rowid, status, shape, serializer, initial, detail FROM runs "
                    "WHERE run_id=?",
                    (run_id,),
                ).fetchone()
                if row is None:
                    rowid = db.execute(
                        "INSERT INTO runs (run_id, flow, shape, serializer, status, created, "
                        "updated, initial, target, meta, holder) "
                        "VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?)",
                        (run_id, flow, shape, self.serializer.name, now, now, initial, target,
                         how, holder),
                    ).lastrowid  # fmt: skip
                    assert rowid is not None
                else:
                    rowid = row[0]
                self._claim(run_id, rowid)
                claimed = True
        except BaseException:
            if claimed:  # the new row was not committed after all
                self.release(run_id)
            raise
        if row is None:
            return None
        try:
            if row[1] != "done":  # a finished run given again is not running again
                with self._writing(), _transaction(db):
                    db.execute(
                        "UPDATE runs SET status='running', holder=?, meta=?, updated=?, "
                        "target=COALESCE(target, ?) WHERE run_id=?",
                        (holder, how, now, target, run_id),
                    )
            return self._saved(db, run_id, row[1:])
        except BaseException:
            self.release(run_id)
            raise

    def _saved(self, db: sqlite3.Connection, run_id: str, row: tuple[Any, ...]) -> Saved:
        import json

        status, saved_shape, serializer, saved_initial, detail = row
        saved = Saved(run_id, status, saved_shape, serializer, FORMAT, saved_initial)
        saved.detail = detail
        with self._reading():
            last = db.execute(
                "SELECT seq, position, nodes, node, action, done, shared, owners FROM steps "
                "WHERE run_id=? ORDER BY seq DESC LIMIT 1",
                (run_id,),
            ).fetchone()
            if last is not None:
                seq, position, nodes, node, action, done, shared, owners = last
                saved.last = Record(
                    "step" if done else "progress",
                    int(seq),
                    tuple(int(p) for p in json.loads(position)),
                    tuple(int(n) for n in json.loads(nodes)),
                    action,
                    shared,
                    bool(done),
                    node=node,
                    owners=owners,
                )
            for batch, results in db.execute(
                "SELECT batch, results FROM items WHERE run_id=? ORDER BY chunk", (run_id,)
            ):
                place = tuple(int(p) for p in json.loads(batch))
                saved.items.setdefault(place, []).append(bytes(results))
        return saved

    def save(self, run_id: str, records: Sequence[Record]) -> None:
        """Save ``records`` in one SQLite transaction: all of them or, on a crash, none."""
        import json

        db = self._db()
        steps: list[tuple[Any, ...]] = []
        items: list[tuple[Any, ...]] = []
        cached: list[tuple[Any, ...]] = []
        batches: list[tuple[Any, ...]] = []
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
            if record.kind == "progress":
                batches.append((run_id, json.dumps(record.position), record.node, record.total))
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
            if batches:
                db.executemany(
                    "INSERT INTO batches VALUES (?, ?, ?, ?) ON CONFLICT (run_id, position) "
                    "DO UPDATE SET total=COALESCE(excluded.total, total)",
                    batches,
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
        """Record how the run ended (or paused). A paused run's questions are kept as JSON
        text as well, for ``flowfn runs show`` (which never unpickles anything)."""
        if error is not None and error.endswith(": "):  # an exception without a message
            error = error[:-2]
        questions = self._questions_text(detail) if status == "paused" else None
        db = self._db()
        with self._writing(), _transaction(db):
            db.execute(
                "UPDATE runs SET status=?, error=?, detail=?, questions=?, updated=? "
                "WHERE run_id=?",
                (status, error, detail, questions, time.time(), run_id),
            )

    def _questions_text(self, detail: bytes | None) -> str | None:
        """The questions of ``detail`` (made by this process's serializer just now, so
        loading it is safe) as JSON text; values JSON cannot hold as their repr."""
        import json

        if detail is None:
            return None
        try:
            questions = self.serializer.loads(detail)["questions"]
            return json.dumps(questions, default=repr)
        except Exception:
            return None

    def release(self, run_id: str) -> None:
        """Give up the claim on ``run_id``; another process may resume it from now on."""
        with _claimed_lock:
            lock = self._locks.pop(run_id, None)
            if lock is not None:
                _unlock(*lock)
            _claimed.discard((self._key, run_id))

    def runs(self) -> list[RunInfo]:
        """Every run in the file, oldest first (what ``flowfn runs`` lists), with its
        ``state`` from its lock: whether a process holds it now. A FlowError naming the file
        and the run if a value is not of its column's type."""
        db = self._db()
        more = "r.meta, r.holder" if self._format >= 2 else "NULL, NULL"
        with self._reading():
            rows = db.execute(
                "SELECT r.rowid, r.run_id, r.flow, r.status, r.created, r.updated, r.error, "
                f"r.target, r.serializer, {more}, "
                "(SELECT COUNT(*) FROM steps s WHERE s.run_id=r.run_id AND s.done=1), "
                "(SELECT COALESCE(SUM(count), 0) FROM items i WHERE i.run_id=r.run_id) "
                "FROM runs r ORDER BY r.created"
            ).fetchall()
            return [self._run_info(row) for row in rows]

    def _run_info(self, row: tuple[Any, ...]) -> RunInfo:
        """A row of :meth:`runs` as a RunInfo; a ``TypeError`` naming the run and the column
        if a value is not of its column's type (SQLite keeps any value in any column)."""

        rowid, *values, steps, items = row
        for column, value in zip(_RUN_COLUMNS, values, strict=True):
            kinds = _RUN_COLUMNS[column]
            if not isinstance(value, kinds) or isinstance(value, bool):
                raise TypeError(
                    f"run {values[0]!r}: its {column} is {type(value).__name__} "
                    f"{_short(value)}, not {' or '.join(kind.__name__ for kind in kinds)}"
                )
        run_id, flow, status, created, updated, error, target, kind, how, holder = values
        live = self._is_live(run_id, rowid)
        state = "live" if live else _STATES.get(status, "crashed")
        error = error[:-2] if error is not None and error.endswith(": ") else error
        return RunInfo(
            run_id, flow, status, created, updated, int(steps), int(items), error, target,
            kind, state, holder, *run_meta(run_id, how),
        )  # fmt: skip

    def batches(self, run_id: str) -> list[BatchInfo]:
        """The batches of ``run_id`` in the order they ran: items recorded of items known."""

        db = self._db()
        with self._reading():
            known: dict[str, tuple[str, int | None]] = {}
            if self._format >= 2:
                for position, node, total in db.execute(
                    "SELECT position, node, total FROM batches WHERE run_id=?", (run_id,)
                ):
                    known[position] = (node, total)
            recorded = dict(
                db.execute(
                    "SELECT batch, SUM(count) FROM items WHERE run_id=? GROUP BY batch", (run_id,)
                ).fetchall()
            )
            steps = {
                position: (node, bool(done))
                for position, node, done in db.execute(
                    "SELECT position, node, done FROM steps WHERE run_id=? ORDER BY seq",
                    (run_id,),
                )
            }
        return batch_infos(known, recorded, steps)

    def questions(self, run_id: str) -> list[dict[str, Any]] | None:
        """A paused run's questions (``id``, ``question``, ``node``, ``item``) from their
        JSON text; None if the file holds them only serialised (format 1)."""
        import json

        if self._format < 2:
            return None
        with self._reading():
            row = (
                self._db()
                .execute("SELECT questions FROM runs WHERE run_id=?", (run_id,))
                .fetchone()
            )
            if row is None or row[0] is None:
                return None
            listed = json.loads(row[0])
            return [
                {"id": qid, "question": payload, "node": node, "item": item}
                for qid, payload, node, item in listed
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

        with self._reading():
            rows = self._db().execute(
                "SELECT seq, position, node, action, done FROM steps WHERE run_id=? ORDER BY seq",
                (run_id,),
            )
            return [(seq, tuple(json.loads(p)), n, a, bool(d)) for seq, p, n, a, d in rows]

    # -- keeping the file small ------------------------------------------------------------

    def delete(self, run_id: str) -> bool:
        """Delete ``run_id`` and all it recorded; False if there is no such run. A
        :class:`~flowfn.FlowError` if it is live (a process holds it): stop it first."""
        db = self._db()
        with self._reading():
            row = db.execute("SELECT rowid FROM runs WHERE run_id=?", (run_id,)).fetchone()
        if row is None:
            return False
        try:
            self._claim(run_id, row[0])
        except FlowError as exc:
            raise FlowError(f"{exc}; a live run is not deleted") from None
        try:
            with self._writing(), _transaction(db):
                for table in ("steps", "items", "batches", "runs"):
                    db.execute(f"DELETE FROM {table} WHERE run_id=?", (run_id,))
        finally:
            self.release(run_id)
        return True

    def prune(
        self, older_than: float, *, status: str | None = None, now: float | None = None
    ) -> list[str]:
        """Delete the runs last updated more than ``older_than`` seconds ago (only those
        whose ``state`` is ``status``, if given: ``"finished"``, ``"failed"``, ...), and
        expired cache entries; live runs are kept. Returns the deleted run ids."""
        now = time.time() if now is None else now
        deleted = delete_old_runs(self, older_than, status, now)
        db = self._db()
        with self._writing(), _transaction(db):
            db.execute("DELETE FROM cache WHERE expires IS NOT NULL AND expires <= ?", (now,))
        return deleted

    def close(self) -> None:
        """Close this thread's connection (others close when their thread ends)."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # -- claiming a run --------------------------------------------------------------------

    def _lock_name(self) -> str:
        return self._lock_file

    def _claim(self, run_id: str, slot: int) -> None:
        """Lock byte ``slot`` (the run's rowid: one per run, so no two runs ever block each
        other) of the lock file for this process, or raise a FlowError saying who has it."""
        key = (self._key, run_id)
        with _claimed_lock:
            if key in _claimed:
                raise FlowError(
                    f"run {run_id!r} in {str(self.path)!r} is already running in this "
                    f"process; wait for it to end, or use another run_id"
                )
            name = self._lock_name()
            try:
                locked = _lock(name, slot)
            except OSError as exc:
                raise FlowError(
                    f"checkpoint {str(self.path)!r}: its lock file {name!r} cannot be opened "
                    f"for writing ({exc.strerror or exc}); every user who runs flows in this "
                    f"checkpoint must be able to write it as well as the checkpoint: make it "
                    f"writable for them (a shared group and chmod g+w), or use a checkpoint "
                    f"of your own"
                ) from None
            if not locked:
                holder = self._holder(run_id)
                raise FlowError(
                    f"run {run_id!r} in {str(self.path)!r} is running in another process"
                    f"{f' ({holder})' if holder else ''}; wait for it to end (or stop it) "
                    f"before resuming it"
                )
            _claimed.add(key)
            self._locks[run_id] = (name, slot)

    def _holder(self, run_id: str) -> str | None:
        if self._format < 2:
            return None
        with contextlib.suppress(Exception):
            row = self._db().execute("SELECT holder FROM runs WHERE run_id=?", (run_id,)).fetchone()
            return None if row is None else row[0]
        return None

    def _is_live(self, run_id: str, slot: int) -> bool:
        """Whether a process holds ``run_id`` now: this one, or another (its lock is taken)."""
        with _claimed_lock:
            if (self._key, run_id) in _claimed:
                return True
            return _held(self._lock_name(), slot)


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
            if kind is None:
                db.execute("COMMIT")
            elif db.in_transaction:  # SQLite rolls back by itself on some errors (a full disk)
                db.execute("ROLLBACK")

    return Transaction()


# Lock files: callers hold _claimed_lock.


def _open_lock(name: str, create: bool) -> int | None:
    """The lock file's descriptor, one more user of it; None if it does not exist (and
    ``create`` is false). Read-only if it cannot be written (enough to test a lock)."""
    entry = _lock_files.get(name)
    if entry is None:
        try:
            # 0o666: the umask decides, as for the checkpoint itself (002: a group shares it).
            fd = os.open(name, os.O_RDWR | (os.O_CREAT if create else 0), 0o666)
        except FileNotFoundError:
            if create:
                raise
            return None
        except PermissionError:
            if create:
                raise
            fd = os.open(name, os.O_RDONLY)
        entry = _lock_files[name] = [fd, 0]
    entry[1] += 1
    return entry[0]


def _close_lock(name: str) -> None:
    """One user less of the lock file; the last one closes it."""
    entry = _lock_files[name]
    entry[1] -= 1
    if entry[1] == 0:
        del _lock_files[name]
        os.close(entry[0])


def _lock(name: str, slot: int) -> bool:
    """Lock byte ``slot`` of the lock file ``name`` exclusively, or False if another
    process holds it. The system drops it when this process dies."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: claims hold within this process only
        return True
    fd = _open_lock(name, create=True)
    assert fd is not None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, slot)
    except OSError:
        _close_lock(name)
        return False
    return True


def _unlock(name: str, slot: int) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return
    fcntl.lockf(_lock_files[name][0], fcntl.LOCK_UN, 1, slot)
    _close_lock(name)


def _held(name: str, slot: int) -> bool:
    """Whether another process holds byte ``slot`` of lock file ``name`` (tested with a
    shared lock, taken and dropped at once; never for a run this process holds)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return False
    fd = _open_lock(name, create=False)
    if fd is None:  # no lock file: no process has ever claimed a run here
        return False
    try:
        fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB, 1, slot)
    except OSError:
        return True
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, slot)
    finally:
        _close_lock(name)
    return False
