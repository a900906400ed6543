"""Shared test fixtures. Heavier fixtures (tritonserver, prometheus, KMock) live in the
conftest.py of the test folder that needs them."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO
