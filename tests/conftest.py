"""Shared test helpers: where the reference data live.

The reference data (``../shared/data`` beside the repository) exist wherever the tests run,
CI included, so a missing folder or file is a failure, never a skip.
"""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def data_path(*parts: str) -> Path:
    """Absolute path of a reference file; fails the test (not skips) when it is absent."""
    path = DATA.joinpath(*parts)
    if not path.exists():
        pytest.fail(f"reference data missing: {path} (see {DATA / 'SOURCES.md'})")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not DATA.is_dir():
        pytest.fail(f"reference data folder missing: {DATA}")
    return DATA


@pytest.fixture(scope="session", autouse=True)
def _quiet_opensim():
    """OpenSim logs every tool step at info level; keep test output readable."""
    try:
        import opensim as osim
    except ImportError:  # tests that need OpenSim import it themselves and fail there
        return
    osim.Logger.setLevelString("error")
