"""Fixtures of the traffic tests."""

import pytest

from contract import storage
from tests.object_store import FakeObjectStore


@pytest.fixture
def use_store(monkeypatch):
    def install(store: FakeObjectStore) -> FakeObjectStore:
        monkeypatch.setattr(storage, "backend", store)
        return store
    return install
