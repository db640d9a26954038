"""Outputs that fail early and whole, and products too large for memory, through the real CLI.

Unwritable outputs: the tests run as root, where permission bits do not stop a write, so an
unwritable directory is a path *under a regular file* (ENOTDIR for everyone, root included).
A full disk is a subprocess whose file-size limit (RLIMIT_FSIZE) is a few kB, with SIGXFSZ
ignored so that writes past it fail with EFBIG as they would with ENOSPC.
"""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from neural_mapping.config import apply_overrides, preset
from neural_mapping.io.synthetic import synthetic_sequence
from neural_mapping.mapfile import save_map
from neural_mapping.mapper import Mapper


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    cfg = apply_overrides(preset("cpu"), {"encoding.hash_log2_table": 12, "encoding.hash_levels": 8,
                                          "train.rays_per_step": 256, "render.n_stratified": 4, "render.n_surface": 4})
    m = Mapper(cfg)
    for f in synthetic_sequence(n_frames=6, width=64, height=48).frames:
        assert m.add_frame(f)
    m.step(25)
    return save_map(m, tmp_path_factory.mktemp("map") / "map.pt")


def run_cli(*argv, fsize: int | None = None, timeout: float = 180):
    def limit():  # in the child: a tiny "disk"
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.run([sys.executable, "-m", "neural_mapping.cli", *map(str, argv)], capture_output=True,
                          text=True, timeout=timeout, preexec_fn=limit if fsize else None)


def one_line(r, code=2) -> str:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_mesh_on_a_full_disk_fails_in_one_line_and_leaves_no_file(saved, tmp_path):
    out = tmp_path / "mesh.ply"
    err = one_line(run_cli("mesh", saved, "--voxel", "0.05", "--out", out, fsize=4096))
    assert f"{out}:" in err and ("incomplete" in err or "too large" in err.lower()), err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # neither the mesh nor a temporary file


def test_query_on_a_full_disk_or_an_unwritable_path_leaves_no_npz(saved, tmp_path):
    pts = tmp_path / "p.npy"
    np.save(pts, np.random.default_rng(0).uniform(-1, 1, (20_000, 3)).astype(np.float32))  # 20k x 5 floats > 8 kB
    out = tmp_path / "q.npz"
    err = one_line(run_cli("query", saved, "--points", pts, "--out", out, fsize=8192))
    assert f"{out}: cannot write (File too large); nothing was written" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.npy"]
    from neural_mapping.cli import main

    (tmp_path / "a_file").write_text("x")
    assert main(["query", str(saved), "--points", str(pts), "--out", str(tmp_path / "a_file" / "q.npz")]) == 2


def test_map_out_unwritable_fails_before_training(tmp_path):
    data = tmp_path / "data"
    from neural_mapping.io.datasets import write_replica

    write_replica(synthetic_sequence(n_frames=3, width=32, height=24).frames, data, color_ext="png")
    (tmp_path / "a_file").write_text("x")
    t = time.perf_counter()
    r = run_cli("map", data, "--out", tmp_path / "a_file" / "out", "--preset", "cpu", "--extra-seconds", "60",
                "--quiet")
    err = one_line(r)
    assert time.perf_counter() - t < 50  # refused before the 60 s of training
    assert "a_file/out: cannot create the output directory (--out)" in err and "Not a directory" in err


def test_render_and_occupancy_to_an_unwritable_directory(saved, tmp_path, capsys):
    from neural_mapping.cli import main

    (tmp_path / "a_file").write_text("x")
    pose = tmp_path / "pose.txt"
    np.savetxt(pose, np.eye(4))
    bad = tmp_path / "a_file" / "sub"
    assert main(["render", str(saved), "--pose", str(pose), "--intrinsics", "50", "50", "16", "12", "--size", "32",
                 "24", "--out", str(bad)]) == 2
    assert "cannot create the output directory" in capsys.readouterr().err
    assert main(["occupancy", str(saved), "--out", str(bad / "occ")]) == 2
    assert "directory of --out" in capsys.readouterr().err


def test_products_too_large_for_memory_are_refused_before_computing(saved, tmp_path, capsys):
    from neural_mapping.cli import main

    for argv, what in [(["mesh", str(saved), "--voxel", "0.0001", "--out", str(tmp_path / "m.ply")], "mesh at 0.0001 m"),
                       (["mesh", str(saved), "--voxel", "0.001", "--out", str(tmp_path / "m.ply")], "mesh at 0.001 m"),
                       (["occupancy", str(saved), "--resolution", "0.001", "--out", str(tmp_path / "o")],
                        "occupancy_2d at 0.001 m"),
                       (["mesh", str(saved), "--voxel", "0.05", "--max-memory-gb", "0.01", "--out",
                         str(tmp_path / "m.ply")], "mesh at 0.05 m")]:
        t = time.perf_counter()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert time.perf_counter() - t < 20 and len(err.splitlines()) == 1, err
        assert what in err and "needs about" in err and "--max-memory-gb" in err, err
    assert list(tmp_path.iterdir()) == []


def test_query_refuses_non_finite_points(saved, tmp_path, capsys):
    from neural_mapping.cli import main

    pts = np.zeros((10, 3), np.float32)
    pts[3, 1], pts[7, 0] = np.nan, np.inf
    np.save(tmp_path / "p.npy", pts)
    assert main(["query", str(saved), "--points", str(tmp_path / "p.npy"), "--out", str(tmp_path / "q.npz")]) == 2
    assert "2 of 10 points are not finite (NaN or inf), the first at row 3" in capsys.readouterr().err
    assert not (tmp_path / "q.npz").exists()
