from __future__ import annotations

import importlib.util
import os
import uuid
from collections.abc import Iterator

import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every async test runs once on asyncio and once on trio."""
    return str(request.param)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A ``postgresql://`` URL of the server in ``FLOWFN_TEST_POSTGRES`` (``.ci/postgres``
    starts one), with a schema of its own, dropped afterwards. Without a server the test is
    skipped, saying why; where ``FLOWFN_REQUIRE_POSTGRES=1`` (``.ci/run``) it fails instead."""
    server = os.environ.get("FLOWFN_TEST_POSTGRES")
    why = None
    if not server:
        why = (
            "needs a PostgreSQL server: set FLOWFN_TEST_POSTGRES=postgresql://... "
            "(`. .ci/postgres` starts one and sets it)"
        )
    elif importlib.util.find_spec("psycopg") is None:
        why = "needs psycopg: pip install 'flowfn[postgres]'"
    if why is not None:
        if os.environ.get("FLOWFN_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"FLOWFN_REQUIRE_POSTGRES=1, yet this test {why}")
        pytest.skip(why)
    assert server is not None
    import psycopg

    schema = f"test_{uuid.uuid4().hex[:12]}"
    yield f"{server}{'&' if '?' in server else '?'}schema={schema}"
    with psycopg.connect(server, autocommit=True) as db:
        db.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
