"""The IO commands through the real CLI: synth, convert, info, and their bad-input errors."""

import subprocess
import sys

import numpy as np
import open3d as o3d
import pytest

from neural_mapping.cli import main
from neural_mapping.io.sources import open_source

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("fmt", ["3dmatch", "replica", "tum", "bag"])
def test_synth_each_format(tmp_path, fmt, capsys):
    out = tmp_path / fmt
    rc = main(["synth", "--out", str(out), "--format", fmt, "--frames", "4", "--size", "32", "24", "--seed", "5"])
    assert rc == 0
    mesh = o3d.io.read_triangle_mesh(str(out / "gt_mesh.ply"))
    assert len(mesh.triangles) > 10000 and mesh.has_vertex_colors()
    src = open_source(out)
    assert src.fmt == fmt
    frames = list(src)
    assert len(frames) == 4 and frames[0].rgb.shape == (24, 32, 3)
    assert "wrote 4 frames 32x24" in capsys.readouterr().out


def test_convert_round_trip_and_info(tmp_path, capsys):
    ds = tmp_path / "ds"
    assert main(["synth", "--out", str(ds), "--format", "tum", "--frames", "5", "--size", "32", "24",
                 "--noise", "0.01", "--dropout", "0.1"]) == 0
    bag = tmp_path / "bag"
    assert main(["convert", str(ds), str(bag), "--storage", "sqlite3"]) == 0
    assert "converted 5 frames" in capsys.readouterr().out
    assert (bag / "gt_mesh.ply").is_file()  # the ground truth travels with the frames
    a, b = list(open_source(ds)), list(open_source(bag))
    assert len(a) == len(b) == 5
    for fa, fb in zip(a, b):
        assert fa.stamp_ns == fb.stamp_ns and np.array_equal(fa.rgb, fb.rgb)
        assert np.allclose(fa.T_WC, fb.T_WC, atol=1e-12) and np.array_equal(fa.K, fb.K)
        assert np.abs(fa.depth_m - fb.depth_m).max() <= 0.0005 + 1e-6  # TUM 0.2 mm -> bag 1 mm steps
        assert np.array_equal(fa.depth_m > 0, fb.depth_m > 0)
    assert main(["info", str(bag)]) == 0
    out = capsys.readouterr().out
    assert "format:     bag" in out and "frames:     5 read, 0 skipped" in out and "size:       32x24" in out
    assert "time span:  0.133 s" in out  # 4 intervals at 30 fps
    K = a[0].K
    assert f"fx={K[0, 0]:.6g}" in out
    # converting again into the same directory is refused; --overwrite replaces it
    assert main(["convert", str(ds), str(bag)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["convert", str(ds), str(bag), "--overwrite"]) == 0


def test_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    cases = [
        (["info", str(tmp_path / "missing")], "missing: no such file or directory"),
        (["info", str(tmp_path / "empty")], "empty: empty directory"),
        (["convert", str(tmp_path / "empty"), str(tmp_path / "o")], "empty directory"),
        (["synth", "--out", str(tmp_path / "s"), "--frames", "0"], "--frames must be >= 1"),
    ]
    for argv, msg in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err and err.count("\n") == 1, err
    # synth refuses a non-empty output directory
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert main(["synth", "--out", str(tmp_path / "full")]) == 2
    assert "not empty" in capsys.readouterr().err


def test_corrupt_frame_reported_by_info(tmp_path, capsys):
    ds = tmp_path / "ds"
    assert main(["synth", "--out", str(ds), "--format", "3dmatch", "--frames", "3", "--size", "16", "12"]) == 0
    (ds / "frame-000001.depth.png").write_bytes(b"broken")
    capsys.readouterr()
    assert main(["info", str(ds)]) == 0
    out = capsys.readouterr().out
    assert "frames:     2 read, 1 skipped" in out and "frame-000001" in out


def test_subprocess_bag_without_images(tmp_path):
    """The installed entry point: a bag with no image topics is one line on stderr, exit 2."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    from neural_mapping.io.bag import typestore

    ts = typestore()
    M = ts.types
    with Writer(tmp_path / "b", version=8, storage_plugin=StoragePlugin.MCAP) as w:
        c = w.add_connection("/chatter", "std_msgs/msg/String", typestore=ts)
        w.write(c, 1, ts.serialize_cdr(M["std_msgs/msg/String"](data="hi"), "std_msgs/msg/String"))
    exe = REPO / ".venv" / "bin" / "neural-mapping"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "neural_mapping.cli"]
    r = subprocess.run(cmd + ["info", str(tmp_path / "b")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "no sensor_msgs/Image topics (has /chatter [std_msgs/msg/String])" in r.stderr
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1
