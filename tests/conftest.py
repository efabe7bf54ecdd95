"""Shared fixtures: the real data beside the repository (``../shared/data``), skipped cleanly when absent."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("GLOG_minloglevel", "2")  # pycolmap's C++ logging

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def seasons_cmu(shared_data) -> Path:
    root = shared_data / "seasons-mini" / "cmu"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    return root


@pytest.fixture(scope="session")
def seasons_robotcar(shared_data) -> Path:
    root = shared_data / "seasons-mini" / "robotcar"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    return root
