"""What `make setup` installs where the ROS tools look (issue: `ros2 launch` could not find the launch file).

ros2launch resolves `ros2 launch neural_mapping mapper.launch.py` by finding the package's share
directory through the ament index (AMENT_PREFIX_PATH) and then walking it with ``os.walk``, which
does not follow directory links. `launch` is not installable here, so these tests repeat that
lookup step by step against the installed venv.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PREFIX = Path(sys.prefix)
SHARE = PREFIX / "share" / "neural_mapping"

pytestmark = pytest.mark.skipif(not SHARE.is_dir(), reason=f"not run from the project's venv ({SHARE} missing)")


def _ros2launch_lookup(share_dir: str, file_name: str) -> list[str]:
    """The matching paths as ros2launch's get_share_file_path_from_package collects them."""
    found = []
    for root, _dirs, files in os.walk(share_dir):  # followlinks=False, as upstream
        found += [os.path.join(root, n) for n in files if n == file_name]
    return found


def _share_dir_via_ament_index() -> str:
    from ament_index_python.packages import get_package_share_directory

    old = os.environ.get("AMENT_PREFIX_PATH")
    os.environ["AMENT_PREFIX_PATH"] = str(PREFIX)
    try:
        return get_package_share_directory("neural_mapping")
    finally:
        if old is None:
            os.environ.pop("AMENT_PREFIX_PATH")
        else:
            os.environ["AMENT_PREFIX_PATH"] = old


@pytest.mark.parametrize("sub", ["launch", "config"])
def test_every_launch_and_config_file_is_found_as_ros2launch_looks(sub):
    share = _share_dir_via_ament_index()
    assert Path(share).resolve() == SHARE.resolve()
    assert not Path(share, sub).is_symlink(), f"share/neural_mapping/{sub} must be a real directory"
    names = sorted(p.name for p in (REPO / sub).iterdir() if p.is_file())
    assert names, f"nothing in {sub}/"
    for name in names:
        hits = _ros2launch_lookup(share, name)
        assert len(hits) == 1, f"{name}: ros2launch would find {hits or 'nothing'}"
        assert Path(hits[0]).read_bytes() == (REPO / sub / name).read_bytes()


def test_lookup_does_not_follow_a_linked_directory(tmp_path):
    """The failure this layout avoids: a launch/ directory that is a link is invisible to the walk."""
    share = tmp_path / "share"
    share.mkdir()
    (share / "launch").symlink_to(REPO / "launch", target_is_directory=True)
    assert _ros2launch_lookup(str(share), "mapper.launch.py") == []


def test_activating_the_venv_sets_ament_prefix_path():
    activate = PREFIX / "bin" / "activate"
    if not activate.is_file():
        pytest.skip("no bin/activate in this prefix")
    env = {k: v for k, v in os.environ.items() if k not in ("AMENT_PREFIX_PATH", "VIRTUAL_ENV")}
    out = subprocess.run(["bash", "-c", f'source "{activate}" && source "{activate}" && echo "$AMENT_PREFIX_PATH"'],
                         capture_output=True, text=True, env=env, check=True).stdout.strip()
    assert out.split(":") == [str(PREFIX)]  # set once, even when activated twice
