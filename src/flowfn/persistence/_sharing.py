"""Many processes, one batch: ``run(..., checkpoint="postgresql://...", share=True)``.

A shared run publishes each parallel batch of functions in the ``work`` table of its
Postgres schema (one row per unfinished item, serialised with the run's serializer) and
runs its items like every *helper* (:func:`work`, ``flowfn runs work``) does: it claims
items in batches (``FOR UPDATE SKIP LOCKED``), each claim a lease renewed every third of
the store's ``lease`` while the item runs, runs them with the node's own retries, timeout,
fallback and ``errors=``, and records the results in batches. Helpers' results reach the
run's process through LISTEN/NOTIFY (never a polling loop); it feeds every result to its
journal (so a resume works as for a batch run in one process) and hands them to ``post``
in item order.

Global limits: a claim locks the batch's row, counts the live claims of every process
(at most the node's ``limit=``) and takes starts from a token bucket in that row refilled by
the server's clock (at most ``per_second=`` starts per second, a burst of a tenth of a
second's worth). The node's own rate limit is not applied again in any process.

A ``limiter=`` given a name (``flowfn.Limiter(8, per_second=5, name="openai")``) holds
across every process on the schema, in every shared run: each attempt takes a slot row (a
lease, renewed with the claims, so a dead process's slots expire) and a start from the
limiter's token bucket.

A helper killed mid-item leaves claims that expire after ``lease`` seconds; then any
process takes the items. A helper stopped with Ctrl-C gives its claims back at once.
``flowfn runs cancel`` marks the run cancelled and notifies it: the run's process and
every helper stop their items at their next checkpoint, and the run ends with
:class:`RunCancelled` (state ``cancelled``).
"""

from __future__ import annotations

import collections
import contextlib
import copy
import functools
import hashlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterator, Sized
from types import SimpleNamespace
from typing import Any

import anyio

from .._durable import journal as _journal
from .._engine.errors import FlowError, add_note, node_name
from .._engine.hooks import PauseRequest
from .._engine.limiter import Limiter
from .postgres import _NOW, PostgresStore

try:
    import psycopg
    from psycopg import sql
except ImportError as exc:  # pragma: no cover - postgres.py said so already
    raise FlowError("shared runs need psycopg 3: pip install 'flowfn[postgres]'") from exc

__all__ = ["RunCancelled", "Sharing", "cancel", "check_flow", "work", "work_async"]

_OPEN, _CLAIMED, _RECORDED, _TAKEN = 0, 1, 2, 3
_PAUSED = object()  # an item of the run's process that asked for input


#: Told of each notification about the run: (kind, batch position, item indices or None).
_OnNote = Callable[[str, str, "list[int] | None"], None]


class RunCancelled(FlowError):
    """The run was cancelled (``flowfn runs cancel``): recorded with the state ``cancelled``."""

    status = "cancelled"


# -- what every process sharing a run has ------------------------------------------------


def _channel(schema: str) -> str:
    """The schema's NOTIFY channel (an identifier of at most 63 bytes)."""
    return "flowfn_" + hashlib.sha1(schema.encode()).hexdigest()[:24]


class _Conn:
    """One connection of its own, used by one worker thread at a time."""

    def __init__(self, store: PostgresStore) -> None:
        self.store = store
        self.db: psycopg.Connection[Any] | None = None
        self.lock = threading.Lock()
        #: Checks, in the statements' transaction, that this process may still write them.
        self.guard: Callable[[psycopg.Connection[Any]], None] | None = None

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        with self.lock:
            if self.db is None or self.db.closed:
                self.db = self.store._connect()
            try:
                if self.guard is None:
                    return fn(self.store, self.db, *args)
                with self.db.transaction():
                    self.guard(self.db)
                    return fn(self.store, self.db, *args)
            except psycopg.OperationalError as exc:
                self.db.close()  # broken: the next call opens another one
                raise self.store._failed("written", exc) from None
            except psycopg.Error as exc:
                raise self.store._failed("written", exc) from None

    async def __call__(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(functools.partial(self.call, fn, *args))

    def close(self) -> None:
        with self.lock:
            if self.db is not None:
                self.db.close()
                self.db = None


class _Listener:
    """A thread listening on the schema's channel: the notifications about ``run_id`` go
    to ``on_note(kind, position, indices)`` on the event loop's thread."""

    def __init__(self, store: PostgresStore, run_id: str, on_note: _OnNote) -> None:
        from .._engine.backend import waker as _waker

        self.store, self.run_id, self.on_note = store, run_id, on_note
        self.wake = _waker()
        self.stopping = threading.Event()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._listen, name="flowfn-listen", daemon=True)
        self.thread.start()

    def _listen(self) -> None:
        listen = sql.SQL("LISTEN {}").format(sql.Identifier(_channel(self.store.schema)))
        while not self.stopping.is_set():
            try:
                db = self.store._connect()
            except Exception as exc:
                if not self.ready.is_set():  # at the start: the process hears of it
                    self.error = exc
                    self.ready.set()
                    return
                time.sleep(0.5)  # later: again, until the server is back
                continue
            try:
                with db:
                    db.execute(listen)
                    if self.ready.is_set():  # reconnected: what came meanwhile is unknown
                        self.wake(functools.partial(self.on_note, "again", "", None))
                    if self._cancelled(db):  # a cancel before it listened was heard by none
                        self.wake(functools.partial(self.on_note, "cancel", "", None))
                    self.ready.set()
                    while not self.stopping.is_set():
                        for note in db.notifies(timeout=0.2):
                            self._tell(note.payload)
            except psycopg.Error:
                time.sleep(0.2)

    def _cancelled(self, db: psycopg.Connection[Any]) -> bool:
        row = db.execute(
            self.store._sql("SELECT cancelled FROM {schema}.runs WHERE run_id = %s"),
            (self.run_id,),
        ).fetchone()
        return row is not None and bool(row[0])

    def _tell(self, payload: str) -> None:
        with contextlib.suppress(ValueError, TypeError):
            run_id, kind, position, *indices = json.loads(payload)
            if run_id == self.run_id:
                found = indices[0] if indices else None
                self.wake(functools.partial(self.on_note, kind, position, found))

    async def started(self) -> None:
        await anyio.to_thread.run_sync(self.ready.wait)
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        self.stopping.set()


class _Shared:
    """One process's part in a shared run: its claim token, connections and listener."""

    def __init__(self, store: PostgresStore, run_id: str) -> None:
        self.store, self.run_id = store, run_id
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.claims, self.records = _Conn(store), _Conn(store)
        self.handlers: dict[str, _OnNote] = {}
        self.listener: _Listener | None = None
        self.limiters: dict[str, _GlobalLimiter] = {}

    def limiter(self, limiter: Limiter) -> _GlobalLimiter:
        """The named ``limiter``, held across processes (one per name in this process)."""
        assert limiter.name is not None
        found = self.limiters.get(limiter.name)
        if found is None:
            found = self.limiters[limiter.name] = _GlobalLimiter(limiter, self)
        return found

    async def start(self) -> None:
        self.listener = _Listener(self.store, self.run_id, self._note)
        await self.listener.started()

    def _note(self, kind: str, position: str, indices: list[int] | None) -> None:
        for handler in list(self.handlers.values()):
            handler(kind, position, indices)

    def payload(self, kind: str, position: str = "") -> str:
        return json.dumps([self.run_id, kind, position])

    async def notify(self, kind: str, position: str = "") -> None:
        await self.records(_notify, _channel(self.store.schema), self.payload(kind, position))

    def give_back(self, position: str | None = None) -> None:
        """Give this process's claims back at once (blocks)."""
        with contextlib.suppress(FlowError):
            self.records.call(_give_back, self.run_id, self.owner, position, self.payload("again"))

    def close(self) -> None:
        if self.listener is not None:
            self.listener.stop()
        self.claims.close()
        self.records.close()
        for limiter in self.limiters.values():
            limiter.close()


# -- the statements -------------------------------------------------------------------------


def _holding(store: PostgresStore, run_id: str, db: psycopg.Connection[Any]) -> None:
    """The run's process writes the run's batches only while it holds the run's lease: a
    process that was frozen or cut off and lost it to another must not take, record or close
    the items of the batch the new holder published. The lease row stays locked (FOR SHARE)
    until the statements' transaction ends, so no process takes the run over meanwhile."""
    lease = store._leases.get(run_id)
    held = (
        lease is not None
        and not lease.lost
        and db.execute(
            store._sql("SELECT 1 FROM {schema}.leases WHERE run_id = %s AND token = %s FOR SHARE"),
            (run_id, lease.token),
        ).fetchone()
        is not None
    )
    if not held:
        if lease is not None:
            lease.lost = True
        raise store._lost(run_id)


def _notify(store: PostgresStore, db: psycopg.Connection[Any], channel: str, payload: str) -> None:
    db.execute("SELECT pg_notify(%s, %s)", (channel, payload))


def _give_back(
    store: PostgresStore,
    db: psycopg.Connection[Any],
    run_id: str,
    owner: str,
    position: str | None,
    payload: str,
) -> None:
    """This process's claims open again, its batches' live counts and cursors moved back."""
    with db.transaction():
        db.execute(
            store._sql(
                "WITH back AS (UPDATE {schema}.work SET state = 0, owner = NULL, "
                "expires = NULL, tries = tries - 1 WHERE run_id = %s AND owner = %s "
                "AND state = 1 "
                "AND (%s::text IS NULL OR position = %s::text) RETURNING position, idx) "
                "UPDATE {schema}.shared_batches b SET live = b.live - c.n, "
                "next_open = least(b.next_open, c.first) FROM (SELECT position, count(*) AS n, "
                "min(idx) AS first FROM back GROUP BY position) c "
                "WHERE b.run_id = %s AND b.position = c.position"
            ),
            (run_id, owner, position, position, run_id),
        )
        db.execute("SELECT pg_notify(%s, %s)", (_channel(store.schema), payload))


def _publish(
    store: PostgresStore,
    db: psycopg.Connection[Any],
    row: tuple[Any, ...],
    items: list[tuple[int, bytes]],
    payload: str,
) -> None:
    """The batch's row and one row per unfinished item (what an earlier attempt of the same
    batch left is replaced: its unrecorded items run again)."""
    run_id, position = row[0], row[1]
    with db.transaction():
        for table in ("work", "shared_batches"):
            db.execute(
                store._sql(f"DELETE FROM {{schema}}.{table} WHERE run_id = %s AND position = %s"),
                (run_id, position),
            )
        db.execute(
            store._sql(
                "INSERT INTO {schema}.shared_batches (run_id, position, node, nodes, total, "
                "lim, per_second, burst, tokens, refilled, params, state) "
                f"VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, {_NOW}, %s, 'open')"
            ),
            row,
        )
        with (
            db.cursor() as cursor,
            cursor.copy(
                store._sql("COPY {schema}.work (run_id, position, idx, item, state) FROM STDIN")
            ) as copying,
        ):
            for index, blob in items:
                copying.write_row((run_id, position, index, blob, _OPEN))
        db.execute(store._sql("ANALYZE {schema}.work"))  # plans for its size, not an empty one
        db.execute("SELECT pg_notify(%s, %s)", (_channel(store.schema), payload))


def _close(
    store: PostgresStore, db: psycopg.Connection[Any], run_id: str, position: str, payload: str
) -> None:
    with db.transaction():
        for table in ("work", "shared_batches"):
            db.execute(
                store._sql(f"DELETE FROM {{schema}}.{table} WHERE run_id = %s AND position = %s"),
                (run_id, position),
            )
        db.execute("SELECT pg_notify(%s, %s)", (_channel(store.schema), payload))


def _claim(
    store: PostgresStore,
    db: psycopg.Connection[Any],
    run_id: str,
    position: str,
    owner: str,
    want: int,
    expired: bool,
) -> tuple[list[tuple[int, bytes]], float | None, bool]:
    """Claim up to ``want`` items (first, if ``expired``, those whose claim expired: their
    holder died): (index, item) pairs, how long to wait before trying again if none (None:
    until notified), and whether the batch is still open.

    The batch's row, locked until the transaction ends, keeps the count of live claims
    (``live``, at most ``lim``), the rate's token bucket, and ``next_open``: no open item
    comes before it (so that the claims never walk over the rows claimed before)."""
    key = (run_id, position)
    with db.transaction():
        row = db.execute(
            store._sql(
                f"SELECT lim, per_second, burst, tokens, refilled, ({_NOW})::float8, live, "
                "next_open FROM {schema}.shared_batches WHERE run_id = %s AND position = %s "
                "FOR UPDATE"
            ),
            key,
        ).fetchone()
        if row is None:
            return [], None, False
        limit, rate, burst, tokens, refilled, now, live, next_open = row
        if rate is not None:
            tokens = min(burst, tokens + (now - refilled) * rate)
            want = min(want, int(tokens))
        if expired:
            live -= _give_up_on_poison(store, db, key, now)
        claimed = _take_expired(store, db, key, owner, want, now) if expired and want > 0 else []
        fresh = want - len(claimed) if limit is None else min(want - len(claimed), limit - live)
        opened = _take_open(store, db, key, owner, fresh, now, next_open) if fresh > 0 else []
        claimed += opened
        if rate is not None or opened:
            tokens = None if rate is None else tokens - len(claimed)
            db.execute(
                store._sql(
                    "UPDATE {schema}.shared_batches SET tokens = %s, refilled = %s, "
                    "live = live + %s, next_open = %s WHERE run_id = %s AND position = %s"
                ),
                (tokens, now, len(opened), opened[-1][0] + 1 if opened else next_open, *key),
            )
    if claimed:
        return claimed, None, True
    if rate is not None and tokens < 1 and (limit is None or live < limit):
        return [], (1 - tokens) / rate, True
    return [], None, True


#: An item whose claim expired this many times (the process running it died each time)
#: fails instead of being claimed again: it may be what kills them.
MOST_DEATHS = 3


def _give_up_on_poison(
    store: PostgresStore, db: psycopg.Connection[Any], key: tuple[str, str], now: float
) -> int:
    """Fail the items whose claim expired :data:`MOST_DEATHS` times (recorded as a helper's
    failure: the run's process gets them as such); how many."""
    text = (
        f"the process running this item died (its claim expired) {MOST_DEATHS} times in a "
        f"row; it is failed rather than handed to another process, which it might kill too"
    )
    blob = store.serializer.dumps({"error": f"FlowError: {text}", "helper": "none"})
    dead = db.execute(
        store._sql(
            "UPDATE {schema}.work SET state = %s, ok = false, result = %s, expires = NULL "
            "WHERE run_id = %s AND position = %s AND state = 1 AND expires < %s "
            "AND tries >= %s RETURNING idx"
        ),
        (_RECORDED, blob, *key, now, MOST_DEATHS),
    ).fetchall()
    if not dead:
        return 0
    _fewer_live(store, db, key, len(dead))
    told = json.dumps([key[0], "recorded", key[1]])  # no indices: the run looks at them all
    db.execute("SELECT pg_notify(%s, %s)", (_channel(store.schema), told))
    return len(dead)


def _fewer_live(
    store: PostgresStore, db: psycopg.Connection[Any], key: tuple[str, str], count: int
) -> None:
    """``count`` claims of the batch ended (recorded, or given up on): room for as many."""
    db.execute(
        store._sql(
            "UPDATE {schema}.shared_batches SET live = live - %s "
            "WHERE run_id = %s AND position = %s"
        ),
        (count, *key),
    )


def _take_expired(
    store: PostgresStore,
    db: psycopg.Connection[Any],
    key: tuple[str, str],
    owner: str,
    want: int,
    now: float,
) -> list[tuple[int, bytes]]:
    """Items whose claim expired, claimed again (a claim passed on: ``live`` is unchanged)."""
    return _take(store, db, key, owner, now, "state = 1 AND expires < %s", now, want)


def _take_open(
    store: PostgresStore,
    db: psycopg.Connection[Any],
    key: tuple[str, str],
    owner: str,
    want: int,
    now: float,
    next_open: int,
) -> list[tuple[int, bytes]]:
    return _take(store, db, key, owner, now, "state = 0 AND idx >= %s", next_open, want)


def _take(
    store: PostgresStore,
    db: psycopg.Connection[Any],
    key: tuple[str, str],
    owner: str,
    now: float,
    which: str,
    bound: float,
    want: int,
) -> list[tuple[int, bytes]]:
    # Two statements, the second on the primary key: a join of the rows picked with the
    # table is planned as a scan of the whole table.
    picked = db.execute(
        store._sql(
            "SELECT idx FROM {schema}.work WHERE run_id = %s AND position = %s "
            f"AND {which} ORDER BY idx LIMIT %s FOR UPDATE SKIP LOCKED"
        ),
        (*key, bound, want),
    ).fetchall()
    if not picked:
        return []
    rows = db.execute(
        store._sql(
            "UPDATE {schema}.work SET state = 1, owner = %s, expires = %s, claimed = %s, "
            "tries = tries + 1 WHERE run_id = %s AND position = %s AND idx = ANY(%s::int[]) "
            "RETURNING idx, item"
        ),
        (owner, now + store.lease, now, *key, [row[0] for row in picked]),
    ).fetchall()
    return sorted((int(index), bytes(blob)) for index, blob in rows)


def _record(
    store: PostgresStore,
    db: psycopg.Connection[Any],
    key: tuple[str, str],
    owner: str,
    state: int,
    rows: list[tuple[int, bool, bytes | None]],
    payload: str,
) -> set[int]:
    """Record finished items whose claim this process still holds; returns their indices
    (an item whose claim expired and was taken by another process is that one's)."""
    with db.transaction():
        accepted = db.execute(
            store._sql(
                "UPDATE {schema}.work w SET state = %s, ok = v.ok, result = v.result, "
                "expires = NULL FROM unnest(%s::int[], %s::bool[], %s::bytea[]) "
                "AS v(idx, ok, result) WHERE w.run_id = %s AND w.position = %s "
                "AND w.idx = v.idx AND w.owner = %s AND w.state = 1 RETURNING w.idx"
            ),
            (
                state,
                [row[0] for row in rows],
                [row[1] for row in rows],
                [row[2] for row in rows],
                *key,
                owner,
            ),
        ).fetchall()
        indices = [int(row[0]) for row in accepted]
        if indices:
            _fewer_live(store, db, key, len(indices))
        channel = _channel(store.schema)
        # A notification holds less than 8000 bytes: as many indices (10 digits, ", " at
        # most) as fit beside the run's id and the batch's position (JSON: ASCII).
        per = max(1, (7900 - len(payload)) // 12)
        for first in range(0, len(indices), per):
            told = json.dumps([*json.loads(payload), indices[first : first + per]])
            db.execute("SELECT pg_notify(%s, %s)", (channel, told))
        if not indices:
            db.execute("SELECT pg_notify(%s, %s)", (channel, payload))
    return set(indices)


def _renew(
    store: PostgresStore, db: psycopg.Connection[Any], key: tuple[str, str], owner: str
) -> None:
    db.execute(
        store._sql(
            f"UPDATE {{schema}}.work SET expires = {_NOW} + %s "
            "WHERE run_id = %s AND position = %s AND owner = %s AND state = 1"
        ),
        (store.lease, *key, owner),
    )
    db.execute(
        store._sql(f"UPDATE {{schema}}.limiter_slots SET expires = {_NOW} + %s WHERE owner = %s"),
        (store.lease, owner),
    )


def _acquire(
    store: PostgresStore,
    db: psycopg.Connection[Any],
    name: str,
    owner: str,
    concurrency: int | None,
    per_second: float | None,
) -> tuple[int | None, float]:
    """One slot of the named limiter: (its id, 0), or (None, seconds to wait before trying
    again). The limiter's row, locked until the transaction ends, orders the takers; slots
    whose holder stopped renewing them are dropped first."""
    burst = 1.0 if per_second is None else max(1.0, per_second / 10)
    with db.transaction():
        db.execute(
            store._sql(
                "INSERT INTO {schema}.limiters (name, tokens, refilled) "
                f"VALUES (%s, %s, {_NOW}) ON CONFLICT DO NOTHING"
            ),
            (name, burst),
        )
        tokens, refilled, now = db.execute(
            store._sql(
                f"SELECT tokens, refilled, ({_NOW})::float8 FROM {{schema}}.limiters "
                "WHERE name = %s FOR UPDATE"
            ),
            (name,),
        ).fetchone() or (0.0, 0.0, 0.0)
        db.execute(
            store._sql("DELETE FROM {schema}.limiter_slots WHERE name = %s AND expires < %s"),
            (name, now),
        )
        if concurrency is not None:
            held = db.execute(
                store._sql("SELECT count(*) FROM {schema}.limiter_slots WHERE name = %s"),
                (name,),
            ).fetchone()
            if held is not None and held[0] >= concurrency:
                return None, 0.0
        if per_second is not None:
            tokens = min(burst, tokens + (now - refilled) * per_second)
            db.execute(
                store._sql(
                    "UPDATE {schema}.limiters SET tokens = %s, refilled = %s WHERE name = %s"
                ),
                (tokens - 1 if tokens >= 1 else tokens, now, name),
            )
            if tokens < 1:
                return None, (1 - tokens) / per_second
        slot = db.execute(
            store._sql(
                "INSERT INTO {schema}.limiter_slots (name, owner, expires) "
                f"VALUES (%s, %s, {_NOW} + %s) RETURNING id"
            ),
            (name, owner, store.lease),
        ).fetchone()
    return (int(slot[0]) if slot else 0), 0.0


def _release(store: PostgresStore, db: psycopg.Connection[Any], slot: int) -> None:
    db.execute(store._sql("DELETE FROM {schema}.limiter_slots WHERE id = %s"), (slot,))


class _GlobalLimiter(Limiter):
    """A named :class:`~flowfn.Limiter` in a shared run: its ``concurrency`` and
    ``per_second`` hold across every process on the schema (see :func:`_acquire`).

    One task of this process asks the server at a time (the others wait their turn here),
    so waiting attempts cost the server one query per process, not one per attempt; a
    waiter for a free slot asks again after 20 ms, doubling up to 200 ms."""

    __slots__ = ("_conn", "_owner", "_turn")

    def __init__(self, limiter: Limiter, shared: _Shared) -> None:
        super().__init__(limiter.concurrency, per_second=limiter.per_second, name=limiter.name)
        self._conn, self._owner = _Conn(shared.store), shared.owner
        self._turn: anyio.Lock | None = None

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._turn is None:
            self._turn = anyio.Lock()
        pause, slot = 0.02, None
        try:
            async with self._turn:
                while slot is None:
                    # Shielded: a slot taken by a query a cancellation interrupted would
                    # stay held (and renewed) for as long as this process lives.
                    with anyio.CancelScope(shield=True):
                        slot, wait = await self._conn(
                            _acquire, self.name, self._owner, self.concurrency, self.per_second
                        )
                    if slot is None:
                        await anyio.sleep(wait or pause)
                        pause = wait or min(0.2, pause * 2)
            yield
        finally:
            if slot is not None:
                with anyio.CancelScope(shield=True):
                    await self._conn(_release, slot)

    def close(self) -> None:
        self._conn.close()


def _fetch(
    store: PostgresStore,
    db: psycopg.Connection[Any],
    key: tuple[str, str],
    indices: list[int] | None,
) -> list[tuple[int, bool, bytes]]:
    """Take the results helpers recorded: of ``indices``, or (None) all of them."""
    among = "" if indices is None else "AND idx = ANY(%s) "
    rows = db.execute(
        store._sql(
            "WITH old AS (SELECT idx, result FROM {schema}.work WHERE run_id = %s "
            f"AND position = %s {among}AND state = 2 FOR UPDATE) "
            "UPDATE {schema}.work w SET state = 3, result = NULL FROM old "
            "WHERE w.run_id = %s AND w.position = %s AND w.idx = old.idx "
            "RETURNING old.idx, w.ok, old.result"
        ),
        (*key, *(() if indices is None else (indices,)), *key),
    ).fetchall()
    return [(int(index), bool(ok), bytes(blob)) for index, ok, blob in rows]


# -- one process's share of one batch -----------------------------------------------------


class _Server:
    """Claims items of one batch, runs them, records their results, until stopped.

    ``run_item(index, item)`` runs one item; ``state`` is what a result recorded here
    becomes (``_TAKEN`` in the run's process, whose journal has it at once; ``_RECORDED``
    in a helper, for the run's process to take); ``on_recorded(rows)`` gets the results
    whose claim this process still held. At most ``cap`` items are claimed here at once;
    items that never wait (CPU-bound) are claimed a few at a time, so that other processes
    get their share."""

    def __init__(
        self,
        shared: _Shared,
        position: str,
        run_item: Callable[[int, Any], Awaitable[Any]],
        state: int,
        on_recorded: Callable[[list[tuple[int, bool, Any]]], None],
        cap: int,
    ) -> None:
        self.shared, self.position, self.run_item = shared, position, run_item
        self.key = (shared.run_id, position)
        self.state, self.on_recorded, self.cap = state, on_recorded, cap
        self.loads, self.dumps = shared.store.serializer.loads, shared.store.serializer.dumps
        self.ready: collections.deque[tuple[int, bytes]] = collections.deque()  # claimed
        self.workers = 0  # tasks running the claimed items, one after another
        self.busy = 0  # workers inside an item
        self.finished: list[tuple[int, bool, Any]] = []
        self.wake = anyio.Event()
        self.flush = anyio.Event()
        self.seconds = 0.005  # an item's time, on average (guessed until measured)
        self.ran = 0
        self.open = True
        self.error: Exception | None = None
        self.expiry_check = 0.0  # when to look for expired claims next (monotonic)

    def poke(self) -> None:
        self.wake.set()

    async def serve(self) -> None:
        """Claim and run items until the batch is closed (or this task is cancelled); a
        failure to claim or record is raised as itself."""
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._guarded, self._recorder, tg)
                tg.start_soon(self._guarded, self._renewer, tg)
                await self._guarded(self._claim_loop, tg)
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.shared.give_back, self.position)
        if self.error is not None:
            raise self.error

    async def _guarded(self, task: Callable[..., Awaitable[None]], tg: Any) -> None:
        try:
            await task(tg)
        except Exception as exc:
            if self.error is None:
                self.error = exc
            tg.cancel_scope.cancel()

    def _want(self) -> int:
        room = self.cap - len(self.ready) - self.busy
        if self.workers and self.busy == self.workers:  # every worker waits inside an item
            return room  # (for I/O): as many as the cap lets run at once
        # Items that never wait: enough for about 100 ms, claimed again when half are left,
        # while the worker runs the others (it lets this task run between items; a claim's
        # thread waits for the GIL while items hold it: it takes several switch intervals).
        ahead = max(2, min(512, int(0.1 / max(self.seconds, 1e-5))))
        return 0 if len(self.ready) > ahead // 2 else min(room, ahead - len(self.ready))

    async def _claim_loop(self, tg: Any) -> None:
        while self.open:
            want = self._want()
            wait: float | None = None
            if want > 0:
                now = time.monotonic()
                expired = now >= self.expiry_check
                if expired:  # now and then: the claims of a process that died
                    self.expiry_check = now + min(1.0, self.shared.store.lease / 4)
                claimed, wait, self.open = await self.shared.claims(
                    _claim, *self.key, self.shared.owner, want, expired
                )
                self.ready.extend(claimed)
                self._grow(tg)
                if claimed:
                    continue
            if self.open:
                await self._sleep(wait)

    def _grow(self, tg: Any) -> None:
        """Start workers: one if there is none; more while every worker waits inside an
        item (the items wait for I/O: up to one per claimed item)."""
        idle = self.workers - self.busy
        while self.ready and (not self.workers or (not idle and self.workers < self.cap)):
            self.workers += 1
            tg.start_soon(self._worker)
            if self.busy < self.workers - 1:
                break

    async def _sleep(self, seconds: float | None) -> None:
        with anyio.move_on_after(self.shared.store.lease / 3 if seconds is None else seconds):
            await self.wake.wait()
        self.wake = anyio.Event()

    async def _worker(self) -> None:
        ready, loads = self.ready, self.loads
        try:
            while ready:
                index, blob = ready.popleft()
                self.busy += 1
                started = time.perf_counter()
                try:
                    value: Any = await self.run_item(index, loads(blob))
                    ok = True
                except Exception as exc:
                    value, ok = exc, False
                finally:
                    self.busy -= 1
                self.seconds += (time.perf_counter() - started - self.seconds) / 8
                self.ran += 1
                self.finished.append((index, ok, value))
                self.flush.set()
                self.wake.set()
                await anyio.lowlevel.checkpoint()  # the claim loop's turn, the recorder's
        finally:
            self.workers -= 1

    async def _recorder(self, tg: Any) -> None:
        while True:
            await self.flush.wait()
            if not (self.workers and self.busy == self.workers) and self.ready:
                # Items that never wait, and more to run: a few more results per record
                # (a transaction, and a notification, per item would cost more CPU than the
                # items' claims); where items wait, or none is left, record at once.
                await anyio.sleep(min(0.05, 10 * self.seconds))
            self.flush = anyio.Event()
            finished, self.finished = self.finished, []
            rows = [(index, ok, self._blob(index, ok, value)) for index, ok, value in finished]
            accepted = await self.shared.records(
                _record,
                self.key,
                self.shared.owner,
                self.state,
                rows,
                self.shared.payload("recorded", self.position),
            )
            self.on_recorded([row for row in finished if row[0] in accepted])
            self.wake.set()

    def _blob(self, index: int, ok: bool, value: Any) -> bytes | None:
        if self.state == _TAKEN:
            return None  # the run's own process: its journal has the result
        if ok:
            try:
                return self.dumps(value)
            except Exception as exc:
                value = FlowError(
                    f"item {index}: its result cannot be saved to travel to the run's process "
                    f"({type(exc).__name__}: {exc})"
                )
        host = f"pid {os.getpid()} on {socket.gethostname()}"
        add_note(value, f"flowfn: item {index} ran in a helper ({host})")
        try:
            return self.dumps(value)
        except Exception:
            text = f"{type(value).__name__}: {value}"
            return self.dumps({"error": text, "helper": host})

    async def _renewer(self, tg: Any) -> None:
        while True:
            await anyio.sleep(self.shared.store.lease / 3)
            await self.shared.claims(_renew, self.key, self.shared.owner)


# -- the node's items, as every process runs them ------------------------------------------


def _takes_context(node: Any) -> str | None:
    work = getattr(node, "_work", None)
    if work is None:
        return None
    for name, _ in work.inject:
        if name in ("shared", "params", "local"):
            return str(name)
    return None


def _shareable(node: Any) -> bool:
    from .._engine.nodes import AsyncParallelBatchNode

    return (
        isinstance(node, AsyncParallelBatchNode)
        and getattr(node, "_remote", None) is None
        and not hasattr(node, "start_node")
    )


def _walk_nodes(start: Any) -> Iterator[Any]:
    """Every node a walk may step into: nested flows too, not the sub-flows of batch flows
    (their runs are redone whole, in the run's process)."""
    from .._engine.flows import BatchFlow

    for node in _journal._Graph(start).nodes:
        yield node
        inner = getattr(node, "start_node", None)
        if inner is not None and not isinstance(node, BatchFlow):
            yield from _walk_nodes(inner)


def check_flow(root: Any) -> None:
    """A :class:`~flowfn.FlowError` naming the first parallel batch node whose function
    takes ``shared``, ``params`` or ``local``: helpers in other processes cannot give it
    those (what it writes there would never reach the run)."""
    start = getattr(root, "start_node", None)
    for node in _walk_nodes(root if start is None else start):
        taken = _takes_context(node) if _shareable(node) else None
        if taken is not None:
            raise FlowError(
                f"node {node_name(node)!r} takes {taken!r}, which a helper in another process "
                f"cannot give it (what it reads or writes there is the run's process's own): "
                f"with share=True, the items of a parallel batch take their item and named "
                f"params only. Pass what it needs in the items, or drop share=True"
            )


_Runner = Callable[[Any], Awaitable[Any]]


def item_runner(node: Any, params: dict[str, Any] | None, shared: _Shared) -> _Runner:
    """What runs one item of ``node`` in any process: its retries, timeout, fallback and
    ``limiter=`` (across processes if it has a name), without its own rate limit (the
    claims hold ``per_second`` globally)."""
    from .._engine.nodes import AsyncNode

    step = copy.copy(node)
    if params is not None:
        step.params = dict(params)
    step.rate_limit = None
    limiter = getattr(step, "limiter", None)
    if isinstance(limiter, Limiter) and limiter.name:
        step.limiter = shared.limiter(limiter)
    attempt = functools.partial(AsyncNode._exec, step)
    work = getattr(step, "_work", None)
    if work is None:  # a node class: its exec_async gets the item
        return attempt
    limiter = step._limiter()
    kwargs = work.kwargs(step, {})
    return lambda item: attempt(({}, (item,), limiter, kwargs))


# -- the run's process ---------------------------------------------------------------------


class Sharing:
    """A run with ``share=True``: its parallel batches of functions go through the ``work``
    table, where helpers take their share; ``flowfn runs cancel`` stops it."""

    def __init__(self, store: PostgresStore, run_id: str) -> None:
        self.store, self.run_id = store, run_id
        self.shared = _Shared(store, run_id)
        guard = functools.partial(_holding, store, run_id)
        self.shared.claims.guard = self.shared.records.guard = guard
        self.scope: anyio.CancelScope | None = None
        self.cancelled = False

    @classmethod
    def of(cls, store: Any, root: Any, run_id: str) -> Sharing:
        if not isinstance(store, PostgresStore):
            raise FlowError(
                f"{node_name(root)}: share=True shares the run's batches with helpers through "
                f"a PostgreSQL checkpoint; checkpoint={store!r} is not one (give a "
                f"postgresql:// URL or a PostgresStore), or drop share=True"
            )
        check_flow(root)
        return cls(store, run_id)

    async def run(self, walk: Callable[[Any], Awaitable[Any]], shared: Any) -> Any:
        """``await walk(shared)``, stopped if the run is cancelled."""
        await self.shared.start()
        self.shared.handlers["run"] = self._note
        try:
            with anyio.CancelScope() as self.scope:
                result = await walk(shared)
        finally:
            with anyio.CancelScope(shield=True), contextlib.suppress(FlowError):
                await self.shared.notify("ended")
            self.shared.close()
        if self.cancelled:
            raise RunCancelled(
                f"run {self.run_id!r} in {self.store} was cancelled (flowfn runs cancel); "
                f"it may be resumed with the same run_id"
            )
        return result

    def _note(self, kind: str, position: str, indices: list[int] | None) -> None:
        if kind == "cancel" and self.scope is not None:
            self.cancelled = True
            self.scope.cancel()

    def takes(self, node: Any, items: Any) -> bool:
        """Whether this batch is shared: a parallel batch of functions over sized items."""
        return (
            _shareable(node)
            and isinstance(items, Sized)
            and not isinstance(items, AsyncIterable)
            and not _journal._takes_shared(node)
        )

    async def batch(self, journal: _journal.Journal, node: Any, items: Any) -> list[Any]:
        """The batch's results in item order, its items run by every process sharing it."""
        batch = journal.batch(node, items)
        try:
            results = await _RunBatch(self, batch, node, list(items)).run()
        except BaseException:
            batch.end(failed=True)
            raise
        batch.end(failed=False)
        return results


class _RunBatch:
    """One shared batch, as the run's process sees it."""

    def __init__(self, sharing: Sharing, batch: Any, node: Any, jobs: list[Any]) -> None:
        self.sharing, self.batch, self.node, self.jobs = sharing, batch, node, jobs
        item_of = batch.item_of
        self.items = jobs if item_of is None else [item_of(job) for job in jobs]
        self.position = json.dumps(list(batch.position))
        self.where = f"parallel batch node {node_name(node)!r}"
        self.errors = getattr(node, "errors", "fail_fast")
        self.results: list[Any] = [None] * len(jobs)
        self.have: set[int] = set()
        self.failure: BaseException | None = None
        self.done = anyio.Event()
        self.fetching = anyio.Event()
        self.wanted: list[int] = []  # items helpers recorded, to take (-1: look for them)

    async def run(self) -> list[Any]:
        from .._engine.pool import DEFAULT_LIMIT, BatchResults

        for index, value in self.batch.done.items():
            self.batch.check(index, self.jobs[index])
            self.results[index] = value
            self.have.add(index)
        if len(self.have) < len(self.jobs):
            shared = self.sharing.shared
            runner = item_runner(self.node, None, shared)
            cap = getattr(self.node, "limit", None) or DEFAULT_LIMIT
            server = _Server(shared, self.position, self._item(runner), _TAKEN, self._local, cap)
            shared.handlers[self.position] = functools.partial(self._note, server)
            try:
                await shared.records(_publish, *self._rows())
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._guarded, server.serve)
                    tg.start_soon(self._guarded, self._fetcher)
                    await self.done.wait()
                    tg.cancel_scope.cancel()
            finally:
                del shared.handlers[self.position]
                with anyio.CancelScope(shield=True), contextlib.suppress(FlowError):
                    await shared.records(
                        _close, *server.key, shared.payload("closed", self.position)
                    )
        if self.failure is not None:
            raise self.failure
        return BatchResults(self.results) if self.errors == "collect" else self.results

    async def _guarded(self, task: Callable[[], Awaitable[None]]) -> None:
        try:
            await task()
        except Exception as exc:  # raised as itself, not in an exception group
            if self.failure is None:
                self.failure = exc
            self.done.set()

    def _rows(self) -> tuple[tuple[Any, ...], list[tuple[int, bytes]], str]:
        dumps, node = self.sharing.store.serializer.dumps, self.node
        rate = getattr(getattr(node, "rate_limit", None), "per_second", None)
        try:
            params = dumps(dict(node.params))
            items = [(i, dumps(self.items[i])) for i in range(len(self.jobs)) if i not in self.have]
        except Exception as exc:
            raise FlowError(
                f"{self.where}: with share=True its items and params travel to helpers, and "
                f"they cannot be saved with the {self.sharing.store.serializer.name!r} "
                f"serializer ({type(exc).__name__}: {exc})"
            ) from exc
        row = (
            self.sharing.run_id, self.position, node_name(node),
            json.dumps(list(self.batch.nodes)), len(self.jobs), getattr(node, "limit", None),
            rate, None if rate is None else max(1.0, rate / 10),
            None if rate is None else max(1.0, rate / 10), params,
        )  # fmt: skip
        return row, items, self.sharing.shared.payload("opened", self.position)

    def _item(
        self, runner: Callable[[Any], Awaitable[Any]]
    ) -> Callable[[int, Any], Awaitable[Any]]:
        batch = self.batch

        async def run_item(index: int, item: Any) -> Any:
            token = _journal._item.set([batch, index])  # for flowfn.item_key()
            try:
                return await runner(item)
            except PauseRequest as request:
                batch.paused(index, request)
                return _PAUSED
            finally:
                _journal._item.reset(token)

        return run_item

    def _note(self, server: _Server, kind: str, position: str, indices: list[int] | None) -> None:
        if position == self.position or kind == "again":
            server.poke()
            if kind == "recorded" and indices is not None:
                self.wanted.extend(indices)
                self.fetching.set()
            elif kind in ("recorded", "again"):
                self.wanted.append(-1)  # unknown ones: look at every recorded item
                self.fetching.set()

    async def _fetcher(self) -> None:
        loads = self.sharing.store.serializer.loads
        key = (self.sharing.run_id, self.position)
        while True:
            # Told by notifications; now and then a look at every row, in case one was lost.
            with anyio.move_on_after(self.sharing.store.lease / 3) as waited:
                await self.fetching.wait()
            if waited.cancelled_caught:
                self.wanted.append(-1)
            await anyio.sleep(0.01)  # the notifications of other helpers' records too
            self.fetching = anyio.Event()
            wanted, self.wanted = self.wanted, []
            rows = await self.sharing.shared.records(_fetch, key, None if -1 in wanted else wanted)
            self._take([(index, ok, _loaded(loads, blob, ok)) for index, ok, blob in rows])

    def _local(self, rows: list[tuple[int, bool, Any]]) -> None:
        self._take(rows)

    def _take(self, rows: list[tuple[int, bool, Any]]) -> None:
        for index, ok, value in rows:
            if index in self.have:
                continue
            self.have.add(index)
            if ok:
                if value is not _PAUSED:
                    self.results[index] = value
                    self.batch.record(index, self.jobs[index], value)
            else:
                add_note(value, f"flowfn: item {index} of {self.where}")
                if self.errors == "collect":
                    self.results[index] = value
                elif self.failure is None:
                    self.failure = value
                    self.done.set()
        if len(self.have) == len(self.jobs):
            self.done.set()


def _loaded(loads: Callable[[bytes], Any], blob: bytes, ok: bool) -> Any:
    value = loads(blob)
    if ok or isinstance(value, BaseException):
        return value
    if isinstance(value, dict) and "error" in value:
        return FlowError(f"{value['error']} (in a helper, {value.get('helper')})")
    return FlowError(f"an item failed in a helper: {value!r}")


# -- helpers ---------------------------------------------------------------------------------


class _Helper:
    """A helper process's loop: serve the open batches of the run until it ends."""

    def __init__(self, shared: _Shared, root: Any) -> None:
        from .._durable.journal import shape_of

        self.shared, self.root = shared, root
        self.shape = shape_of(root)
        self.serving: dict[str, tuple[anyio.CancelScope, _Server | None]] = {}
        self.poked = anyio.Event()
        self.ended = False
        self.ran = 0
        self.error: Exception | None = None

    async def serve(self) -> int:
        self.shared.handlers["helper"] = self._note
        async with anyio.create_task_group() as tg:
            try:
                await self._watch(tg)
            except Exception as exc:  # a flow refused, the database gone: raised as itself
                if self.error is None:
                    self.error = exc
            tg.cancel_scope.cancel()
        if self.error is not None:  # raised as itself, not in an exception group
            raise self.error
        return self.ran

    async def _watch(self, tg: Any) -> None:
        """Serve each batch of the run as it opens, until the run ends."""
        while not self.ended:
            self.poked = anyio.Event()
            state = await self.shared.claims(_run_state, self.shared.run_id)
            if self._over(state):
                break
            for position, nodes, name, params in state[-1]:
                if position not in self.serving:
                    scope = anyio.CancelScope()
                    self.serving[position] = (scope, None)
                    node = self._node(json.loads(nodes), name)
                    tg.start_soon(self._serve, scope, position, node, params)
            with anyio.move_on_after(self.shared.store.lease / 3):
                await self.poked.wait()

    def _over(self, state: tuple[Any, ...]) -> bool:
        """Whether the run has ended (or is not live any more); checks the flow first."""
        exists, status, cancelled, live, shape, serializer = state[:6]
        if not exists:
            return False  # not started yet: wait for it
        if shape != self.shape:
            raise FlowError(
                f"run {self.shared.run_id!r} in {self.shared.store} was made by a flow of "
                f"another shape than {node_name(self.root)!r} (its nodes, names or actions "
                f"differ); a helper needs the run's own flow (--target)"
            )
        if serializer != self.shared.store.serializer.name:
            raise FlowError(
                f"run {self.shared.run_id!r} uses the {serializer!r} serializer, and this "
                f"helper {self.shared.store.serializer.name!r}; give it the same serializer"
            )
        return status != "running" or bool(cancelled) or not live

    def _node(self, path: list[int], name: str) -> Any:
        node: Any = None
        start = getattr(self.root, "start_node", None)
        for index in path:
            nodes = _journal._Graph(start).nodes if start is not None else []
            if index >= len(nodes):
                node = None
                break
            node = nodes[index]
            start = getattr(node, "start_node", None)
        if node is None or node_name(node) != name or not _shareable(node):
            raise FlowError(
                f"run {self.shared.run_id!r}: its shared batch of node {name!r} is not in "
                f"this helper's flow {node_name(self.root)!r}; a helper needs the run's flow"
            )
        check_flow(self.root)
        return node

    async def _serve(
        self, scope: anyio.CancelScope, position: str, node: Any, params: bytes | None
    ) -> None:
        from .._engine.pool import DEFAULT_LIMIT

        loads = self.shared.store.serializer.loads
        runner = item_runner(node, None if params is None else loads(params), self.shared)
        holder = SimpleNamespace(
            journal=SimpleNamespace(run_id=self.shared.run_id),
            position=tuple(json.loads(position)),
            node=node,
        )

        async def run_item(index: int, item: Any) -> Any:
            token = _journal._item.set([holder, index])  # for flowfn.item_key()
            try:
                return await runner(item)
            except PauseRequest:
                raise FlowError(
                    f"node {node_name(node)!r}, item {index}: flowfn.ask() is not available "
                    f"to the items a helper runs (the run's process asks)"
                ) from None
            finally:
                _journal._item.reset(token)

        cap = getattr(node, "limit", None) or DEFAULT_LIMIT
        server = _Server(self.shared, position, run_item, _RECORDED, lambda rows: None, cap)
        self.serving[position] = (scope, server)
        try:
            with scope:
                await server.serve()
        except Exception as exc:
            if self.error is None:
                self.error = exc
            self.ended = True
            self.poked.set()
        finally:
            self.ran += server.ran

    def _note(self, kind: str, position: str, indices: list[int] | None) -> None:
        if kind in ("ended", "cancel"):
            self.ended = True
        if kind == "closed" and position in self.serving:
            self.serving[position][0].cancel()
        entry = self.serving.get(position)
        if entry is not None and entry[1] is not None:
            entry[1].poke()
        if kind in ("opened", "ended", "cancel", "again"):
            self.poked.set()


def _run_state(store: PostgresStore, db: psycopg.Connection[Any], run_id: str) -> tuple[Any, ...]:
    """(exists, status, cancelled, lease live, shape, serializer, open batches)."""
    row = db.execute(
        store._sql(
            "SELECT r.status, r.cancelled, "
            f"EXISTS (SELECT 1 FROM {{schema}}.leases l WHERE l.run_id = r.run_id "
            f"AND l.expires >= {_NOW}), r.shape, r.serializer "
            "FROM {schema}.runs r WHERE r.run_id = %s"
        ),
        (run_id,),
    ).fetchone()
    batches = db.execute(
        store._sql(
            "SELECT position, nodes, node, params FROM {schema}.shared_batches "
            "WHERE run_id = %s AND state = 'open'"
        ),
        (run_id,),
    ).fetchall()
    opened = [(p, n, name, None if b is None else bytes(b)) for p, n, name, b in batches]
    if row is None:
        return (False, None, False, False, None, None, opened)
    return (True, *row, opened)


def _store(checkpoint: Any, serializer: Any) -> PostgresStore:
    if isinstance(checkpoint, PostgresStore):
        return checkpoint
    if isinstance(checkpoint, str) and checkpoint.startswith(("postgresql://", "postgres://")):
        return PostgresStore(checkpoint, serializer=serializer)
    raise FlowError(
        f"helpers share a run through its PostgreSQL checkpoint: give a postgresql:// URL or "
        f"a PostgresStore, not {checkpoint!r}"
    )


async def work_async(checkpoint: Any, run_id: str, flow: Any, *, serializer: Any = None) -> int:
    """:func:`work` in the running event loop (asyncio or trio)."""
    from .._engine.flows import Flow

    store = _store(checkpoint, serializer)
    root = flow if isinstance(flow, Flow) else Flow(flow)
    check_flow(root)
    shared = _Shared(store, run_id)
    try:
        await shared.start()
        return await _Helper(shared, root).serve()
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(shared.give_back)
        shared.close()


def work(
    checkpoint: Any, run_id: str, flow: Any, *, serializer: Any = None, backend: str = "asyncio"
) -> int:
    """Help run ``run_id`` (started with ``share=True``): run items of its shared batches in
    this process until the run ends (finishes, fails, is cancelled or is no longer live).
    Returns how many items this helper ran. ``flow`` is the run's flow (the same shape:
    the helper finds the batch's node in it). Ctrl-C gives this helper's claims back at once.
    """
    store = _store(checkpoint, serializer)
    return int(anyio.run(functools.partial(work_async, store, run_id, flow), backend=backend))


def cancel(checkpoint: Any, run_id: str) -> bool:
    """Mark ``run_id`` cancelled and tell its processes: the run's process and its helpers
    stop their items at their next checkpoint. False if the run is not running; a
    :class:`~flowfn.FlowError` if it was started without ``share=True`` (it would not hear)."""
    store = _store(checkpoint, None)
    db = store._connect()
    try:
        with store._errors("written"), db.transaction():
            row = db.execute(
                store._sql("SELECT status, meta FROM {schema}.runs WHERE run_id = %s FOR UPDATE"),
                (run_id,),
            ).fetchone()
            if row is None or row[0] != "running":
                return False
            if json.loads(row[1] or "{}").get("share") != "yes":
                raise FlowError(
                    f"run {run_id!r} in {store} was started without share=True, so it does "
                    f"not listen for a cancellation; stop it where it runs (Ctrl-C)"
                )
            db.execute(
                store._sql("UPDATE {schema}.runs SET cancelled = true WHERE run_id = %s"),
                (run_id,),
            )
            payload = json.dumps([run_id, "cancel", ""])
            db.execute("SELECT pg_notify(%s, %s)", (_channel(store.schema), payload))
    finally:
        db.close()
    return True
