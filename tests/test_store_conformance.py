"""The shared checkpoint-store suite (tests/store_conformance.py) on each store: SQLite in a
real file, PostgreSQL on a real server (FLOWFN_TEST_POSTGRES, started by .ci/postgres)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from store_conformance import MakeStore, StoreConformance

from flowfn import SQLiteStore


class TestSQLiteStore(StoreConformance):
    @pytest.fixture
    def make(self, tmp_path: Path) -> MakeStore:
        def make(serializer: Any = None) -> SQLiteStore:
            return SQLiteStore(tmp_path / "runs.db", serializer=serializer)

        return make


class TestPostgresStore(StoreConformance):
    @pytest.fixture
    def make(self, postgres_url: str) -> MakeStore:
        from flowfn.persistence import PostgresStore

        def make(serializer: Any = None) -> PostgresStore:
            return PostgresStore(postgres_url, serializer=serializer, lease=5)

        return make
