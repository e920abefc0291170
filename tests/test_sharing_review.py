"""Adversarial cases of shared batches on PostgreSQL (issue 23, part 2): a run taken over by
another process while its first process still lives, notification payloads near Postgres's
8000-byte limit, odd run ids. Real Postgres, real child processes (tests/sharing_child.py)."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
from test_postgres_sharing import (
    ended,
    events,
    query,
    recorded_indices,
    spawn,
    wait_for,
)

backends = pytest.mark.parametrize("backend", ["asyncio", "trio"])


def lease_expired(url: str) -> bool:
    now = "extract(epoch FROM clock_timestamp())"
    rows = query(url, f"SELECT count(*) FROM {{schema}}.leases WHERE expires >= {now}")
    return int(rows[0][0]) == 0


@backends
def test_a_run_taken_over_while_its_first_process_lives_ends_with_every_result(
    postgres_url: str, tmp_path: Path, backend: str
) -> None:
    """The first process is stopped (SIGSTOP: a network cut, a frozen VM) longer than its
    lease; another process resumes the run; then the first wakes up. It must not take items
    of the new attempt's batch (recording them where the new holder never sees them) nor
    delete that batch: the new holder ends with every item's result, recorded once."""
    items = 200
    url = f"{postgres_url}&lease=2"
    env = {"SHARING_ITEMS": str(items), "SHARING_LIMIT": "20", "SHARING_RATE": "1e9"}
    env |= {"SHARING_SLEEP": "0.01", "SHARING_LOG": str(tmp_path)}
    (tmp_path / "hold").touch()
    first = spawn("run", url, backend, env)
    second = None
    try:
        wait_for("items started", lambda: any(events(tmp_path).values()), first)
        first.send_signal(signal.SIGSTOP)
        time.sleep(2.5)
        wait_for("the first process's lease expired", lambda: lease_expired(url))
        second = spawn("run", url, backend, env)
        wait_for(
            "the second process started items",
            lambda: bool(events(tmp_path).get(second.pid)),  # type: ignore[union-attr]
            second,
        )
        first.send_signal(signal.SIGCONT)
        time.sleep(1.0)  # the first process wakes while the second's items are held
        (tmp_path / "hold").unlink()
        code, output = ended(second, 60)
        first_code, first_output = ended(first, 120)
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
                process.communicate()
    assert code == 0, output
    assert json.loads(output)["total"] == sum(3 * x + 1 for x in range(items))
    assert first_code != 0
    assert "lost its lease" in first_output, first_output
    assert sorted(recorded_indices(url)) == list(range(items))
