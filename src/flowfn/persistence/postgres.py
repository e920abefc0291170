"""Durable runs kept in PostgreSQL: ``run(checkpoint="postgresql://...")``.

The same checkpoint protocol as :class:`~flowfn.SQLiteStore` (the same records, the same
resume), with runs that outlive their machine: the process running a run holds a *lease* on
it, a row renewed by a heartbeat thread every third of ``lease`` seconds. While the lease is
live, another process starting the same ``run_id`` is refused with a
:class:`~flowfn.FlowError` naming the holder (host, pid, since); once it expired (the holder
was killed, its machine lost, its network cut for longer than the lease) any process on any
machine takes the run over and resumes it. Each save checks, inside its own transaction, that
this process still holds the lease: a holder that lost it stops at its next save with a
``FlowError`` and writes nothing more, so a run never has two writers.

The tables live in one schema (``flowfn`` unless told otherwise), created on first use and
versioned in its ``meta`` table; nothing outside that schema is touched. Lease times are the
server's clock, so machines whose clocks disagree still agree on when a lease expires.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from .._durable.store import (
    FORMAT,
    BatchInfo,
    PickleSerializer,
    Record,
    RunInfo,
    Saved,
    Serializer,
    batch_infos,
    delete_old_runs,
    run_meta,
)
from .._engine.errors import FlowError

try:
    import psycopg
    from psycopg import sql
except ImportError as exc:  # pragma: no cover - the extra is not installed
    raise FlowError(
        "checkpoint on PostgreSQL needs psycopg 3: pip install 'flowfn[postgres]'"
    ) from exc

__all__ = ["SCHEMA_FORMAT", "PostgresStore"]

#: The layout of the tables this flowfn writes in its schema; older layouts are brought up
#: to it by the steps of ``_MIGRATIONS``, newer ones are refused.
SCHEMA_FORMAT = 3
# Format 2: the tables of shared batches (flowfn.persistence._sharing): a row per shared
# batch (its global limit, rate bucket and state), a row per item (claimed, recorded), and
# the flag `flowfn runs cancel` sets. Run on a fresh schema, or as the migration from 1.
_FORMAT_2 = """
CREATE TABLE IF NOT EXISTS {schema}.shared_batches (
    run_id TEXT NOT NULL, position TEXT NOT NULL, node TEXT NOT NULL, nodes TEXT NOT NULL,
    total INTEGER NOT NULL, lim INTEGER, per_second DOUBLE PRECISION,
    burst DOUBLE PRECISION, tokens DOUBLE PRECISION, refilled DOUBLE PRECISION,
    params BYTEA, state TEXT NOT NULL, live INTEGER NOT NULL DEFAULT 0,
    next_open INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (run_id, position)
);
CREATE TABLE IF NOT EXISTS {schema}.work (
    run_id TEXT NOT NULL, position TEXT NOT NULL, idx INTEGER NOT NULL, item BYTEA NOT NULL,
    state SMALLINT NOT NULL, owner TEXT, expires DOUBLE PRECISION,
    claimed DOUBLE PRECISION, tries INTEGER NOT NULL DEFAULT 0, ok BOOLEAN, result BYTEA,
    PRIMARY KEY (run_id, position, idx)
);
CREATE INDEX IF NOT EXISTS work_claimed ON {schema}.work (run_id, position) WHERE state = 1;
ALTER TABLE {schema}.runs ADD COLUMN IF NOT EXISTS cancelled BOOLEAN NOT NULL DEFAULT false;
"""
# Format 3: named limiters shared by every process on the schema (``Limiter(name=...)`` in
# a shared run): a row per limiter (its rate bucket) and a row per slot held (a lease).
_FORMAT_3 = """
CREATE TABLE IF NOT EXISTS {schema}.limiters (
    name TEXT PRIMARY KEY, tokens DOUBLE PRECISION NOT NULL, refilled DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS {schema}.limiter_slots (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name TEXT NOT NULL,
    owner TEXT NOT NULL, expires DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS limiter_slots_name ON {schema}.limiter_slots (name);
"""
#: {format: the statements that bring a schema of that format to the next one}.
_MIGRATIONS: dict[int, str] = {1: _FORMAT_2, 2: _FORMAT_3}
_NOW = "extract(epoch from clock_timestamp())"  # the server's clock: one for every machine
_STATES = {
    "done": "finished",
    "failed": "failed",
    "interrupted": "interrupted",
    "paused": "paused",
    "cancelled": "cancelled",
}

_TABLES = """
CREATE TABLE IF NOT EXISTS {schema}.meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS {schema}.runs (
    run_id TEXT PRIMARY KEY, flow TEXT NOT NULL, shape TEXT NOT NULL,
    serializer TEXT NOT NULL, status TEXT NOT NULL, created DOUBLE PRECISION NOT NULL,
    updated DOUBLE PRECISION NOT NULL, initial BYTEA, error TEXT, detail BYTEA, target TEXT,
    meta TEXT, holder TEXT, questions TEXT
);
CREATE TABLE IF NOT EXISTS {schema}.leases (
    run_id TEXT PRIMARY KEY, token TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL,
    since DOUBLE PRECISION NOT NULL, expires DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS {schema}.steps (
    run_id TEXT NOT NULL, seq INTEGER NOT NULL, position TEXT NOT NULL, nodes TEXT NOT NULL,
    node TEXT NOT NULL, action TEXT, done BOOLEAN NOT NULL, shared BYTEA, owners TEXT,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE IF NOT EXISTS {schema}.items (
    run_id TEXT NOT NULL, chunk BIGINT GENERATED ALWAYS AS IDENTITY, batch TEXT NOT NULL,
    count INTEGER NOT NULL, results BYTEA NOT NULL, PRIMARY KEY (run_id, chunk)
);
CREATE TABLE IF NOT EXISTS {schema}.batches (
    run_id TEXT NOT NULL, position TEXT NOT NULL, node TEXT NOT NULL, total INTEGER,
    PRIMARY KEY (run_id, position)
);
CREATE TABLE IF NOT EXISTS {schema}.cache (
    key TEXT PRIMARY KEY, value BYTEA NOT NULL, created DOUBLE PRECISION NOT NULL,
    expires DOUBLE PRECISION
);
"""
_RUN_TABLES = ("steps", "items", "batches", "work", "shared_batches", "leases", "runs")


_ENCODED = "%40 for @, %2F for /, %3F for ?, %23 for #, %25 for %"


def _userinfo(url: str) -> tuple[str, str, str]:
    """``url`` cut around its user name and password: (``scheme://``, ``user:password``
    or "", what follows the ``@``). The ``@`` is the last one before the query, so that a
    password holding ``@``, ``/``, ``#`` or ``?`` (not percent-encoded) is never taken for
    the host or path, whatever urllib or libpq would make of it."""
    scheme, separator, rest = url.partition("://")
    first = rest.find("@")
    if first < 0:
        return scheme + separator, "", rest
    query = rest.find("?", first)
    at = rest.rfind("@", 0, len(rest) if query < 0 else query)
    return scheme + separator, rest[:at], rest[at + 1 :]


def _redacted(url: str, *, options: bool = False) -> str:
    """``url`` without its password (in the user part or a ``password=`` option), and
    without its query options unless ``options`` (then all but ``password``): what may be
    shown, and with ``options`` still names the same schema."""
    head, userinfo, rest = _userinfo(url)
    user = userinfo.split(":", 1)[0]
    for mark in "/?#":  # a malformed user part: keep nothing after its first delimiter
        user = user.split(mark, 1)[0]
    parts = urlsplit(head + (f"{user}@" if user else "") + rest)
    query = ""
    if options:
        kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
        query = urlencode([(k, v) for k, v in kept if k != "password"])
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def _secrets(url: str) -> list[str]:
    """The password of ``url`` as written and decoded (longest first): never to be shown,
    even inside a driver's message."""
    password = _userinfo(url)[1].partition(":")[2]
    found = {password, unquote(password)}
    for key, value in parse_qsl(url.partition("?")[2], keep_blank_values=True):
        if key == "password":
            found |= {value, quote(value)}
    return sorted((text for text in found if text), key=len, reverse=True)


def _check_url(url: str) -> None:
    """A ``ValueError`` (naming the URL without its password) if the user name or password
    of ``url`` holds a character that must be percent-encoded: urllib and libpq would read
    such a URL differently, and libpq's message would quote the password."""
    userinfo = _userinfo(url)[1]
    escapes = userinfo.split("%")[1:]
    if any(mark in userinfo for mark in "/?#@") or any(
        len(escape) < 2 or any(c not in "0123456789abcdefABCDEF" for c in escape[:2])
        for escape in escapes
    ):
        raise ValueError(
            f"PostgresStore: the user name or password in {_redacted(url)!r} holds a "
            f"character that must be percent-encoded in a URL ({_ENCODED}); percent-encode "
            f"it, or leave the password out of the URL and give it in PGPASSWORD or "
            f"~/.pgpass (it is not shown here)"
        )


def _own_options(url: str) -> tuple[str, dict[str, str]]:
    """``url`` without the query options the store takes for itself (``schema``, ``lease``),
    and those options: ``flowfn runs list postgresql://...?schema=jobs`` needs no Python."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    own = {k: v for k, v in query if k in ("schema", "lease")}
    rest = [(k, v) for k, v in query if k not in own]
    return urlunsplit(parts._replace(query=urlencode(rest))), own


class _LeaseLost(FlowError):
    """This process no longer holds the run: another one took it over."""


class _Lease:
    """This process's hold on one run: its token, and the heartbeat thread renewing it."""

    def __init__(self, store: PostgresStore, run_id: str, token: str) -> None:
        self.store, self.run_id, self.token = store, run_id, token
        self.lost = False
        self.stopping = threading.Event()
        self.thread = threading.Thread(
            target=self._beat, name=f"flowfn-lease-{run_id}", daemon=True
        )
        self.thread.start()

    def _beat(self) -> None:
        db: psycopg.Connection[Any] | None = None
        try:
            while not self.stopping.wait(self.store.lease / 3):
                try:
                    db = db or self.store._connect()
                    renewed = db.execute(
                        self.store._sql(
                            f"UPDATE {{schema}}.leases SET expires = {_NOW} + %s "
                            "WHERE run_id = %s AND token = %s"
                        ),
                        (self.store.lease, self.run_id, self.token),
                    ).rowcount
                except (psycopg.Error, FlowError):
                    # Cut off: try again next beat; saves check the lease themselves.
                    if db is not None:
                        db.close()
                    db = None
                    continue
                if not renewed:
                    self.lost = True  # another process took the run over
                    return
            with contextlib.suppress(psycopg.Error, FlowError):
                db = db or self.store._connect()
                db.execute(  # give it back at once: another process may resume it now
                    self.store._sql("DELETE FROM {schema}.leases WHERE run_id = %s AND token = %s"),
                    (self.run_id, self.token),
                )
        finally:
            if db is not None:
                db.close()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join()


class PostgresStore:
    """Runs kept in a PostgreSQL database, in the tables of one schema.

    ``PostgresStore("postgresql://user@host/db")`` is what ``run(checkpoint="postgresql://...")``
    uses (``postgres://`` too). ``schema`` names the schema holding flowfn's tables (created
    on first use, with the tables); ``lease`` is how many seconds a run stays claimed after
    its process last renewed its lease (renewed every ``lease / 3`` seconds while it runs):
    the longest a run whose machine died waits before another process may take it over. The
    URL may carry both as options: ``postgresql://host/db?schema=jobs&lease=60``.

    Several runs, processes and machines may share a schema; a run is held by one process at
    a time. ``read_only=True`` only inspects (``runs``, ``batches``, ``questions``,
    ``steps``): no table is created and nothing is unpickled.
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        lease: float | None = None,
        serializer: Serializer | None = None,
        target: str | None = None,
        read_only: bool = False,
    ) -> None:
        _check_url(url)
        self._url, own = _own_options(url)
        self.url = _redacted(url)  # shown in messages: never the password
        self._secrets = _secrets(url)
        self.schema = schema or own.get("schema") or "flowfn"
        try:
            self.lease = float(lease if lease is not None else own.get("lease", 30.0))
        except ValueError:
            self.lease = -1.0
        if not self.lease > 0:
            raise ValueError(
                f"PostgresStore: lease must be a number of seconds above 0, got "
                f"{lease if lease is not None else own.get('lease')!r}"
            )
        #: Where the flow is (``module:name``), recorded with new runs.
        self.target = target
        self.read_only = read_only
        self.serializer: Serializer = serializer or PickleSerializer()
        if not isinstance(self.serializer, Serializer):
            raise TypeError(
                f"PostgresStore: serializer must have name, dumps() and loads(), got "
                f"{self.serializer!r}"
            )
        self._local = threading.local()
        self._leases: dict[str, _Lease] = {}
        self._ready = False

    def __repr__(self) -> str:
        return f"PostgresStore({self.url!r}, schema={self.schema!r})"

    def __str__(self) -> str:
        return f"{self.url} (schema {self.schema})"

    # -- connections: one per thread -----------------------------------------------------

    def _sql(self, text: str) -> sql.Composed:
        return sql.SQL(text).format(schema=sql.Identifier(self.schema))

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            db = psycopg.connect(self._url, autocommit=True, connect_timeout=30)
            # A holder frozen or cut off inside a transaction would keep its row locks, and
            # a process taking its run over would wait for them forever: the server ends
            # such a session (our transactions never wait on anything but the server).
            db.execute(
                "SELECT set_config('idle_in_transaction_session_timeout', %s, false)",
                (str(int(max(self.lease, 10.0) * 1000)),),
            )
        except psycopg.Error as exc:
            raise FlowError(
                f"checkpoint {self}: cannot connect to PostgreSQL ({self._scrub(exc)}); "
                f"check the URL, and that the server runs and lets this user in"
            ) from None
        if not self._ready:
            try:
                self._prepare(db)
            except BaseException:
                db.close()
                raise
            self._ready = True
        return db

    def _db(self) -> psycopg.Connection[Any]:
        db: psycopg.Connection[Any] | None = getattr(self._local, "db", None)
        if db is None or db.closed:
            db = self._local.db = self._connect()
        return db

    def close(self) -> None:
        """Close this thread's connection (each thread has its own)."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    def _prepare(self, db: psycopg.Connection[Any]) -> None:
        """The schema and its tables, created if need be, brought to ``SCHEMA_FORMAT``."""
        with self._errors("read"):
            quoted = '"' + self.schema.replace('"', '""') + '"'  # the name as the user gave it
            found = db.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{quoted}.meta",)).fetchone()
            exists = bool(found and found[0])
        if self.read_only:
            if not exists:
                raise FlowError(
                    f"checkpoint {self}: no flowfn runs here (there is no schema "
                    f"{self.schema!r} with flowfn's tables)"
                )
            self._refuse_foreign(db)
            self._check_format(self._format_of(db))
            return
        with self._errors("written"), db.transaction():
            # One creator at a time: CREATE ... IF NOT EXISTS is not safe against a racing twin.
            db.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"flowfn:{self.schema}",))
            self._refuse_foreign(db)
            db.execute(self._sql("CREATE SCHEMA IF NOT EXISTS {schema}"))
            db.execute(self._sql(_TABLES))
            fresh = db.execute(
                self._sql(
                    "INSERT INTO {schema}.meta VALUES ('format', %s) ON CONFLICT DO NOTHING "
                    "RETURNING key"
                ),
                (str(SCHEMA_FORMAT),),
            ).fetchone()
            if fresh is not None:  # made in this format at once (an ALTER TABLE on every
                db.execute(self._sql(_FORMAT_2 + _FORMAT_3))  # open waits for live runs' locks)
            found_format = self._format_of(db)
            while found_format is not None and found_format in _MIGRATIONS:
                db.execute(self._sql(_MIGRATIONS[found_format]))
                found_format += 1
                db.execute(
                    self._sql("UPDATE {schema}.meta SET value = %s WHERE key = 'format'"),
                    (str(found_format),),
                )
        self._check_format(found_format)

    def _refuse_foreign(self, db: psycopg.Connection[Any]) -> None:
        """A FlowError if the schema holds tables, but not flowfn's (a ``runs`` table and a
        ``meta`` table with flowfn's format row): another program's, never to be written
        into or pruned. An empty schema (made for flowfn by an administrator) is used."""
        with self._errors("read"):
            tables = sorted(
                row[0]
                for row in db.execute(
                    "SELECT c.relname FROM pg_class c JOIN pg_namespace n "
                    "ON n.oid = c.relnamespace WHERE n.nspname = %s "
                    "AND c.relkind IN ('r', 'p', 'v', 'm', 'f')",
                    (self.schema,),
                )
            )
        marked = None
        if {"meta", "runs"} <= set(tables):
            try:
                with db.transaction():  # a savepoint: their meta may lack these columns
                    marked = db.execute(
                        self._sql("SELECT 1 FROM {schema}.meta WHERE key = 'format'")
                    ).fetchone()
            except psycopg.Error:
                marked = None
        if tables and marked is None:
            raise FlowError(
                f"checkpoint {self}: schema {self.schema!r} holds tables of another program "
                f"({', '.join(tables[:5])}), not flowfn's, and flowfn keeps its runs in a "
                f"schema of its own: choose another one (schema= in the URL, as "
                f"?schema=flowfn_runs, or PostgresStore(url, schema=...))"
            )

    def _format_of(self, db: psycopg.Connection[Any]) -> int | None:
        with self._errors("read"):
            row = db.execute(self._sql("SELECT value FROM {schema}.meta WHERE key='format'"))
            found = row.fetchone()
        try:
            return None if found is None else int(found[0])
        except ValueError:
            return None

    def _check_format(self, found: int | None) -> None:
        if found != SCHEMA_FORMAT:
            raise FlowError(
                f"checkpoint {self}: its tables are in format {found}, and this flowfn "
                f"reads format {SCHEMA_FORMAT}; use the flowfn that wrote them, or another "
                f"schema (PostgresStore(url, schema=...))"
            )

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """The driver's errors as a FlowError naming the database and what was done."""
        try:
            yield
        except psycopg.Error as exc:
            raise self._failed(doing, exc) from None
        except (ValueError, TypeError) as exc:  # a row's JSON text, or its values' types
            raise self._damaged(exc) from None

    def _failed(self, doing: str, exc: Exception) -> FlowError:
        return FlowError(
            f"checkpoint {self} cannot be {doing} ({type(exc).__name__}: "
            f"{self._scrub(exc)}); check the server, and that this user may use schema "
            f"{self.schema!r}"
        )

    def _damaged(self, exc: Exception) -> FlowError:
        return FlowError(
            f"checkpoint {self} cannot be read ({type(exc).__name__}: {exc}): a row is "
            f"damaged or was written by another program; resume from an intact copy, or "
            f"start afresh in another schema (schema= in the URL)"
        )

    def _scrub(self, exc: Exception) -> str:
        """The driver's message without the password (libpq may quote parts of the URL)."""
        text = str(exc).strip()
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

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
        """Take the lease on ``run_id`` and return what was saved (None for a new run).

        A :class:`~flowfn.FlowError` naming the holder (host, pid, since) if another process,
        or another run of this one, holds a live lease on it; an expired lease is taken over.
        """
        now, token = time.time(), uuid.uuid4().hex
        host, pid = socket.gethostname(), os.getpid()
        holder = f"pid {pid} on {host}"
        how = json.dumps(dict(meta or {}))
        db = self._connect()  # its own connection: begin runs on any worker thread
        try:
            with self._errors("written"), db.transaction():
                new = db.execute(
                    self._sql(
                        "INSERT INTO {schema}.runs (run_id, flow, shape, serializer, status, "
                        "created, updated, initial, target, meta, holder) "
                        "VALUES (%s, %s, %s, %s, 'running', %s, %s, %s, %s, %s, %s) "
                        "ON CONFLICT (run_id) DO NOTHING RETURNING run_id"
                    ),
                    (run_id, flow, shape, self.serializer.name, now, now, initial, target, how,
                     holder),
                ).fetchone() is not None  # fmt: skip
                self._take_lease(db, run_id, token, host, pid)
                row = db.execute(
                    self._sql(
                        "SELECT status, shape, serializer, initial, detail "
                        "FROM {schema}.runs WHERE run_id = %s"
                    ),
                    (run_id,),
                ).fetchone()
                assert row is not None
                if not new and row[0] != "done":  # a finished run given again stays finished
                    db.execute(
                        self._sql(
                            "UPDATE {schema}.runs SET status='running', holder=%s, meta=%s, "
                            "updated=%s, target=COALESCE(target, %s), cancelled=false "
                            "WHERE run_id=%s"
                        ),
                        (holder, how, now, target, run_id),
                    )
                    # What an earlier process of the run left for helpers goes: a run
                    # resumed without share=True runs those items itself, and a shared one
                    # publishes its batches again when they start.
                    for table in ("work", "shared_batches"):
                        db.execute(
                            self._sql(f"DELETE FROM {{schema}}.{table} WHERE run_id = %s"),
                            (run_id,),
                        )
                saved = None if new else self._saved(db, run_id, row)
        finally:
            db.close()
        self._leases[run_id] = _Lease(self, run_id, token)
        return saved

    def _take_lease(
        self, db: psycopg.Connection[Any], run_id: str, token: str, host: str, pid: int
    ) -> None:
        taken = db.execute(
            self._sql(
                f"INSERT INTO {{schema}}.leases VALUES (%s, %s, %s, %s, {_NOW}, {_NOW} + %s) "
                "ON CONFLICT (run_id) DO UPDATE SET token = excluded.token, "
                "host = excluded.host, pid = excluded.pid, since = excluded.since, "
                f"expires = excluded.expires WHERE {{schema}}.leases.expires < {_NOW} "
                "RETURNING run_id"
            ),
            (run_id, token, host, pid, self.lease),
        ).fetchone()
        if taken is not None:
            return
        row = db.execute(
            self._sql(
                f"SELECT host, pid, since, expires - {_NOW} FROM {{schema}}.leases "
                "WHERE run_id = %s"
            ),
            (run_id,),
        ).fetchone()
        assert row is not None
        held_host, held_pid, since, left = row
        mine = held_pid == pid and held_host == host
        since_text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since))
        raise FlowError(
            f"run {run_id!r} in {self} is "
            f"{'already running in this process' if mine else 'running in another process'} "
            f"(pid {held_pid} on {held_host}, since {since_text}; its lease is renewed while "
            f"it runs and expires {max(left, 0):.0f}s after it stops); wait for it to end (or "
            f"stop it) before resuming it"
        )

    def _saved(self, db: psycopg.Connection[Any], run_id: str, row: Sequence[Any]) -> Saved:
        status, saved_shape, serializer, saved_initial, detail = row
        saved = Saved(run_id, status, saved_shape, serializer, FORMAT, saved_initial)
        saved.detail = detail
        last = db.execute(
            self._sql(
                "SELECT seq, position, nodes, node, action, done, shared, owners "
                "FROM {schema}.steps WHERE run_id = %s ORDER BY seq DESC LIMIT 1"
            ),
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
                None if shared is None else bytes(shared),
                bool(done),
                node=node,
                owners=owners,
            )
        for batch, results in db.execute(
            self._sql("SELECT batch, results FROM {schema}.items WHERE run_id = %s ORDER BY chunk"),
            (run_id,),
        ):
            place = tuple(int(p) for p in json.loads(batch))
            saved.items.setdefault(place, []).append(bytes(results))
        return saved

    def _holds(self, db: psycopg.Connection[Any], run_id: str) -> bool:
        """Whether this process still holds ``run_id``'s lease; renews it, and locks the
        lease row until the transaction ends, so no other process takes it meanwhile."""
        lease = self._leases.get(run_id)
        if lease is None or lease.lost:
            return False
        renewed = db.execute(
            self._sql(
                f"UPDATE {{schema}}.leases SET expires = {_NOW} + %s "
                "WHERE run_id = %s AND token = %s"
            ),
            (self.lease, run_id, lease.token),
        ).rowcount
        if not renewed:
            lease.lost = True
        return bool(renewed)

    @contextlib.contextmanager
    def _holding(self, run_id: str) -> Iterator[psycopg.Connection[Any]]:
        """A transaction on this thread's connection, begun by checking (and renewing) the
        lease: a ``_LeaseLost`` error if another process took the run over. A connection cut
        meanwhile is reported as a lost lease if it was lost, else as what went wrong."""
        db = self._db()
        try:
            with db.transaction():
                if not self._holds(db, run_id):
                    raise self._lost(run_id)
                yield db
        except psycopg.OperationalError as exc:
            self.close()  # broken: the next write opens another connection
            if not self._still_held(run_id):
                raise self._lost(run_id) from None
            raise self._failed("written", exc) from None
        except psycopg.Error as exc:
            raise self._failed("written", exc) from None

    def _still_held(self, run_id: str) -> bool:
        lease = self._leases.get(run_id)
        if lease is None or lease.lost:
            return False
        try:
            db = self._connect()
        except FlowError:
            return True  # cannot tell: the cause is the error to report
        with db, contextlib.suppress(psycopg.Error):
            row = db.execute(
                self._sql("SELECT 1 FROM {schema}.leases WHERE run_id = %s AND token = %s"),
                (run_id, lease.token),
            ).fetchone()
            return row is not None
        return True

    def _lost(self, run_id: str) -> FlowError:
        return _LeaseLost(
            f"run {run_id!r} in {self}: this process lost its lease on the run (it could not "
            f"renew it for {self.lease:g}s, and another process took the run over); it stops "
            f"here and writes nothing more"
        )

    def save(self, run_id: str, records: Sequence[Record]) -> None:
        """Save ``records`` in one transaction, only while this process holds the lease."""
        steps, items, cached, batches, latest = _rows(run_id, records)
        with self._holding(run_id) as db, db.cursor() as cursor:
            if cached:
                cursor.executemany(
                    self._sql(
                        "INSERT INTO {schema}.cache VALUES (%s, %s, %s, %s) ON CONFLICT "
                        "(key) DO UPDATE SET value = excluded.value, "
                        "created = excluded.created, expires = excluded.expires"
                    ),
                    cached,
                )
            if items:
                cursor.executemany(
                    self._sql(
                        "INSERT INTO {schema}.items (run_id, batch, count, results) "
                        "VALUES (%s, %s, %s, %s)"
                    ),
                    items,
                )
            if batches:
                cursor.executemany(
                    self._sql(
                        "INSERT INTO {schema}.batches VALUES (%s, %s, %s, %s) "
                        "ON CONFLICT (run_id, position) DO UPDATE SET "
                        "total = COALESCE(excluded.total, {schema}.batches.total)"
                    ),
                    batches,
                )
            if steps:
                self._save_steps(cursor, run_id, steps, latest)
            cursor.execute(
                self._sql("UPDATE {schema}.runs SET updated = %s WHERE run_id = %s"),
                (time.time(), run_id),
            )

    def _save_steps(
        self, cursor: psycopg.Cursor[Any], run_id: str, steps: list[tuple[Any, ...]], latest: int
    ) -> None:
        cursor.executemany(
            self._sql(
                "INSERT INTO {schema}.steps VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (run_id, seq) DO UPDATE SET position = excluded.position, "
                "nodes = excluded.nodes, node = excluded.node, action = excluded.action, "
                "done = excluded.done, shared = excluded.shared, owners = excluded.owners"
            ),
            steps,
        )
        # Only the latest shared store is needed to resume; older ones are history.
        cursor.execute(
            self._sql(
                "UPDATE {schema}.steps SET shared = NULL "
                "WHERE run_id = %s AND seq < %s AND shared IS NOT NULL"
            ),
            (run_id, latest),
        )

    def finish(self, run_id: str, status: str, error: str | None, detail: bytes | None) -> None:
        """Record how the run ended (or paused), if this process still holds its lease. A
        holder that lost it records nothing; a run that finished or paused then says so
        with a :class:`~flowfn.FlowError` (the process that took it over goes on with it)."""
        if error is not None and error.endswith(": "):  # an exception without a message
            error = error[:-2]
        questions = self._questions_text(detail) if status == "paused" else None
        try:
            with self._holding(run_id) as db:
                db.execute(
                    self._sql(
                        "UPDATE {schema}.runs SET status=%s, error=%s, detail=%s, "
                        "questions=%s, updated=%s WHERE run_id=%s"
                    ),
                    (status, error, detail, questions, time.time(), run_id),
                )
        except _LeaseLost:
            if status in ("done", "paused"):
                raise
            # Else the run's own error is on its way; the new holder records the rest.

    def _questions_text(self, detail: bytes | None) -> str | None:
        """A paused run's questions as JSON text, for ``flowfn runs show``."""
        if detail is None:
            return None
        try:
            questions = self.serializer.loads(detail)["questions"]
            return json.dumps(questions, default=repr)
        except Exception:
            return None

    def release(self, run_id: str) -> None:
        """Give the lease on ``run_id`` back: another process may resume it from now on."""
        lease = self._leases.pop(run_id, None)
        if lease is not None:
            lease.stop()
        self.close()  # this thread's connection (the loop's, for cache lookups)

    def cache_get(self, key: str, now: float) -> bytes | None:
        """The value cached under ``key`` that has not expired by ``now``, or None."""
        with self._errors("read"):
            row = (
                self._db()
                .execute(
                    self._sql(
                        "SELECT value FROM {schema}.cache "
                        "WHERE key = %s AND (expires IS NULL OR expires > %s)"
                    ),
                    (key, now),
                )
                .fetchone()
            )
        return None if row is None else bytes(row[0])

    # -- inspecting ------------------------------------------------------------------------

    def runs(self) -> list[RunInfo]:
        """Every run in the schema, oldest first, with its ``state`` from its lease."""
        with self._errors("read"):
            rows = (
                self._db()
                .execute(
                    self._sql(
                        "SELECT r.run_id, r.flow, r.status, r.created, r.updated, r.error, "
                        "r.target, r.serializer, r.meta, "
                        "(SELECT COUNT(*) FROM {schema}.steps s "
                        " WHERE s.run_id = r.run_id AND s.done), "
                        "(SELECT COALESCE(SUM(count), 0) FROM {schema}.items i "
                        " WHERE i.run_id = r.run_id), "
                        "l.host, l.pid, l.since, r.holder "
                        "FROM {schema}.runs r LEFT JOIN {schema}.leases l "
                        f"ON l.run_id = r.run_id AND l.expires >= {_NOW} "
                        "ORDER BY r.created, r.run_id"
                    )
                )
                .fetchall()
            )
            return [_run_info(row) for row in rows]

    def batches(self, run_id: str) -> list[BatchInfo]:
        """The batches of ``run_id``: items recorded of items known."""
        db = self._db()
        with self._errors("read"):
            known = {
                position: (node, total)
                for position, node, total in db.execute(
                    self._sql("SELECT position, node, total FROM {schema}.batches WHERE run_id=%s"),
                    (run_id,),
                )
            }
            recorded = dict(
                db.execute(
                    self._sql(
                        "SELECT batch, SUM(count) FROM {schema}.items WHERE run_id=%s "
                        "GROUP BY batch"
                    ),
                    (run_id,),
                ).fetchall()
            )
            steps = {
                position: (node, bool(done))
                for position, node, done in db.execute(
                    self._sql(
                        "SELECT position, node, done FROM {schema}.steps WHERE run_id=%s "
                        "ORDER BY seq"
                    ),
                    (run_id,),
                )
            }
        return batch_infos(known, recorded, steps)

    def questions(self, run_id: str) -> list[dict[str, Any]] | None:
        """A paused run's questions (``id``, ``question``, ``node``, ``item``)."""
        with self._errors("read"):
            row = (
                self._db()
                .execute(
                    self._sql("SELECT questions FROM {schema}.runs WHERE run_id=%s"), (run_id,)
                )
                .fetchone()
            )
            if row is None or row[0] is None:
                return None
            return [
                {"id": qid, "question": payload, "node": node, "item": item}
                for qid, payload, node, item in json.loads(row[0])
            ]

    def detail(self, run_id: str) -> bytes | None:
        """How the run ended, serialised: a paused run's questions, a finished run's result."""
        with self._errors("read"):
            row = (
                self._db()
                .execute(self._sql("SELECT detail FROM {schema}.runs WHERE run_id=%s"), (run_id,))
                .fetchone()
            )
        return None if row is None or row[0] is None else bytes(row[0])

    def steps(self, run_id: str) -> list[tuple[int, tuple[int, ...], str, str | None, bool]]:
        """(seq, position, node, action, done) of every recorded step of ``run_id``."""
        with self._errors("read"):
            rows = (
                self._db()
                .execute(
                    self._sql(
                        "SELECT seq, position, node, action, done FROM {schema}.steps "
                        "WHERE run_id=%s ORDER BY seq"
                    ),
                    (run_id,),
                )
                .fetchall()
            )
            return [(seq, tuple(json.loads(p)), n, a, bool(d)) for seq, p, n, a, d in rows]

    # -- keeping the schema small ------------------------------------------------------------

    def delete(self, run_id: str) -> bool:
        """Delete ``run_id`` and all it recorded; False if there is no such run. A
        :class:`~flowfn.FlowError` if it is live (a process holds its lease): stop it first."""
        db = self._db()
        with self._errors("written"), db.transaction():
            row = db.execute(
                self._sql("SELECT 1 FROM {schema}.runs WHERE run_id=%s FOR UPDATE"), (run_id,)
            ).fetchone()
            if row is None:
                return False
            lease = db.execute(
                self._sql(
                    f"SELECT host, pid FROM {{schema}}.leases WHERE run_id=%s "
                    f"AND expires >= {_NOW} FOR UPDATE"
                ),
                (run_id,),
            ).fetchone()
            if lease is not None:
                raise FlowError(
                    f"run {run_id!r} in {self} is running in another process (pid {lease[1]} "
                    f"on {lease[0]}); a live run is not deleted"
                )
            for table in _RUN_TABLES:
                db.execute(self._sql(f"DELETE FROM {{schema}}.{table} WHERE run_id=%s"), (run_id,))
        return True

    def prune(
        self, older_than: float, *, status: str | None = None, now: float | None = None
    ) -> list[str]:
        """Delete the runs last updated more than ``older_than`` seconds ago (only those
        whose ``state`` is ``status``, if given), and expired cache entries; live runs are
        kept. Returns the deleted run ids."""
        now = time.time() if now is None else now
        deleted = delete_old_runs(self, older_than, status, now)
        with self._errors("written"):
            self._db().execute(
                self._sql("DELETE FROM {schema}.cache WHERE expires IS NOT NULL AND expires <= %s"),
                (now,),
            )
        return deleted


def _rows(
    run_id: str, records: Sequence[Record]
) -> tuple[
    list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]], int
]:
    """The rows of ``records`` for each table: steps, items, cache, batches; and the latest
    step's seq."""
    steps, items, cached, batches = [], [], [], []
    latest = -1
    for record in records:
        if record.kind in ("step", "progress"):
            steps.append(
                (run_id, record.seq, json.dumps(record.position), json.dumps(record.nodes),
                 record.node, record.action, record.done, record.shared, record.owners)
            )  # fmt: skip
            latest = max(latest, record.seq)
        if record.kind == "progress":
            batches.append((run_id, json.dumps(record.position), record.node, record.total))
        if record.kind == "cache":
            cached.append((record.node, record.shared, time.time(), record.expires))
        if record.items is not None:
            items.append((run_id, json.dumps(record.position), record.count, record.items))
    return steps, items, cached, batches, latest


def _run_info(row: Sequence[Any]) -> RunInfo:
    (run_id, flow, status, created, updated, error, target, kind, how, steps, items,
     host, pid, since, holder) = row  # fmt: skip
    live = host is not None
    state = "live" if live else _STATES.get(status, "crashed")
    if live:  # else the process that started (or resumed) it last
        holder = f"pid {pid} on {host}, since {time.strftime('%H:%M:%S', time.localtime(since))}"
    error = error[:-2] if error is not None and error.endswith(": ") else error
    return RunInfo(
        run_id, flow, status, created, updated, int(steps), int(items), error, target, kind,
        state, holder, *run_meta(run_id, how),
    )  # fmt: skip
