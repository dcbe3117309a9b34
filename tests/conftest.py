"""Shared test setup: everything offline, files under tmp paths."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _run_in_tmp(tmp_path, monkeypatch):
    """Agents write their run files under ./agent_runs: keep that inside the test's tmp dir."""
    monkeypatch.chdir(tmp_path)


from fake_glm_server import fake_server  # noqa: E402,F401  (the loopback GLM-4 server fixture)
