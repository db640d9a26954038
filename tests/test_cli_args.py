"""The command line's refusals of arguments out of range and of broken inputs: exit code 2 and
one line naming what is wrong, before any work (no map file is needed for these)."""

from __future__ import annotations

import numpy as np
import pytest

from neural_mapping.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("args")
    np.savetxt(d / "pose.txt", np.eye(4))
    (d / "not_a_map.pt").write_bytes(b"hello")
    return d


CASES = [
    (["map", "{d}/x", "--out", "{d}/o", "--max-frames", "0"], "--max-frames must be >= 1"),
    (["map", "{d}/x", "--out", "{d}/o", "--rate", "-2"], "--rate must be positive"),
    (["map", "{d}/x", "--out", "{d}/o", "--exclude-every", "-1"], "--exclude-every must be >= 0"),
    (["map", "{d}/x", "--out", "{d}/o", "--extra-seconds", "-1"], "--extra-seconds must be >= 0"),
    (["mesh", "{d}/not_a_map.pt", "--voxel", "-0.01", "--out", "{d}/m.ply"], "--voxel must be positive"),
    (["mesh", "{d}/not_a_map.pt", "--voxel", "nan", "--out", "{d}/m.ply"], "--voxel must be positive"),
    (["mesh", "{d}/not_a_map.pt", "--out", "{d}/m.ply"], "not a neural_mapping map file (bad magic bytes)"),
    (["render", "{d}/not_a_map.pt", "--pose", "{d}/pose.txt", "--intrinsics", "50", "50", "8", "8", "--size", "0", "16",
      "--out", "{d}/r"], "--size must be positive"),
    (["render", "{d}/not_a_map.pt", "--pose", "{d}/pose.txt", "--intrinsics", "50", "50", "8", "8", "--size", "5000",
      "5000", "--out", "{d}/r"], "at most 16 megapixels"),
    (["render", "{d}/not_a_map.pt", "--pose", "{d}/pose.txt", "--intrinsics", "0", "50", "8", "8", "--size", "16", "16",
      "--out", "{d}/r"], "focal lengths must be positive"),
    (["render", "{d}/not_a_map.pt", "--pose", "{d}/pose.txt", "--intrinsics", "50", "50", "inf", "8", "--size", "16",
      "16", "--out", "{d}/r"], "all values finite"),
    (["synth", "--out", "{d}/s", "--frames", "0"], "--frames must be >= 1"),
    (["synth", "--out", "{d}/s", "--size", "4", "4"], "--size at least 8 8"),
    (["synth", "--out", "{d}/s", "--dropout", "1.5"], "--dropout must be in [0, 1)"),
]


@pytest.mark.parametrize("argv, msg", CASES, ids=[" ".join(c[0][:1] + c[0][-2:]) for c in CASES])
def test_arguments_out_of_range_are_one_line_exit_2(files, capsys, argv, msg):
    assert main([a.format(d=files) for a in argv]) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err and err.count("\n") == 1, err


def test_a_truncated_bag_is_one_line_exit_2(tmp_path, capsys):
    bag = tmp_path / "bag"
    assert main(["synth", "--out", str(bag), "--format", "bag", "--frames", "4", "--size", "16", "12"]) == 0
    (mcap,) = bag.glob("*.mcap")
    data = mcap.read_bytes()
    mcap.write_bytes(data[: len(data) * 2 // 3])  # a recording cut short (disk full, killed recorder)
    capsys.readouterr()
    for argv in (["info", str(bag)], ["map", str(bag), "--out", str(tmp_path / "o"), "--quiet"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "cannot open bag" in err and "Traceback" not in err and err.count("\n") == 1, err
    assert not (tmp_path / "o").exists()  # refused before the output directory was made


def test_convert_and_eval_outputs_under_a_regular_file_are_refused_first(tmp_path, capsys):
    """Root ignores permission bits: a path under a regular file is unwritable for everyone."""
    ds = tmp_path / "ds"
    assert main(["synth", "--out", str(ds), "--format", "3dmatch", "--frames", "2", "--size", "16", "12"]) == 0
    (tmp_path / "a_file").write_text("x")
    capsys.readouterr()
    for argv, msg in ((["convert", str(ds), str(tmp_path / "a_file" / "bag")], "a_file: directory of the output exists and is not a directory"),
                      (["eval", str(ds / "gt_mesh.ply"), "--gt", str(ds / "gt_mesh.ply"), "--json",
                        str(tmp_path / "a_file" / "m.json")], "a_file: directory of --json exists and is not a directory")):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1, err
    assert not (tmp_path / "a_file").is_dir()
