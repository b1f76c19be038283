"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def offline_datasets(tmp_path, monkeypatch):
    """lm-eval and datasets offline, with a datasets cache of the test's own: no network, no shared state."""
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
