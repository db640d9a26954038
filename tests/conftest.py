import os
import random
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


@pytest.fixture
def ros_env(monkeypatch):
    """Isolated DDS: a random domain id, localhost only. Returns the env dict for subprocesses."""
    dom = str(random.randint(1, 200))
    monkeypatch.setenv("ROS_DOMAIN_ID", dom)
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    monkeypatch.setenv("ROS_LOCALHOST_ONLY", "1")
    return dict(os.environ)
