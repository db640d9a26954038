"""`neural-mapping map --submaps` writes a map directory, and mesh/query/occupancy/render read it
(docs/submaps.md). A tiny room with 3 m cells (borders at x, y = +-1.5 m)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from neural_mapping.cli import main
from neural_mapping.io.synthetic import synthetic_sequence
from neural_mapping.submaps import SubmapMap, load_map_dir

SMALL_YAML = {
    "device": "cpu",
    "encoding": {"hash_log2_table": 12, "hash_levels": 6, "hash_finest_m": 0.05},
    "train": {"rays_per_step": 256, "steps_per_frame": 2},
    "render": {"n_stratified": 4, "n_surface": 4, "render_samples": 32},
    "mesh": {"voxel_m": 0.1},
    "submaps": {"size_m": 3.0, "overlap_m": 0.5},
}


@pytest.fixture(scope="module")
def mapped(tmp_path_factory):
    root = tmp_path_factory.mktemp("submaps_cli")
    data = root / "syn"
    assert main(["synth", "--out", str(data), "--frames", "10", "--size", "64", "48"]) == 0
    cfg = root / "small.yaml"
    cfg.write_text(yaml.safe_dump(SMALL_YAML))
    out = root / "out"
    assert main(["map", str(data), "--out", str(out), "--config", str(cfg), "--submaps", "--quiet"]) == 0
    return root, out


def test_map_submaps_writes_a_map_directory_and_a_mesh(mapped):
    _, out = mapped
    assert (out / "map" / "manifest.json").is_file() and not (out / "map.pt").exists()
    man = json.loads((out / "map" / "manifest.json").read_text())
    assert man["config"]["submaps"]["enabled"] is True and len(man["submaps"]) >= 2
    assert (out / "mesh.ply").stat().st_size > 0
    assert json.loads((out / "metrics.json").read_text())["mesh"]["triangles"] > 100
    assert isinstance(load_map_dir(out / "map"), SubmapMap)


def test_products_commands_accept_the_map_directory(mapped, tmp_path):
    _, out = mapped
    d = str(out / "map")
    assert main(["mesh", d, "--out", str(tmp_path / "m.ply"), "--voxel", "0.08"]) == 0
    pts = np.array([[0.0, 0.0, 1.2], [-1.0, -1.0, 1.0], [1.0, 1.0, 1.0]], np.float32)
    np.save(tmp_path / "p.npy", pts)
    assert main(["query", d, "--points", str(tmp_path / "p.npy"), "--out", str(tmp_path / "q.npz")]) == 0
    q = np.load(tmp_path / "q.npz")
    ref = load_map_dir(out / "map").query(pts, want_gradient=True)
    np.testing.assert_allclose(q["sdf"], ref.sdf, atol=1e-6)
    assert main(["occupancy", d, "--out", str(tmp_path / "occ")]) == 0
    assert (tmp_path / "occ.pgm").stat().st_size > 0
    f = synthetic_sequence(n_frames=10, width=64, height=48).frames[2]
    np.savetxt(tmp_path / "pose.txt", f.T_WC)
    K = f.K
    assert main(["render", d, "--pose", str(tmp_path / "pose.txt"), "--intrinsics", str(K[0, 0]), str(K[1, 1]),
                 str(K[0, 2]), str(K[1, 2]), "--size", "64", "48", "--out", str(tmp_path / "r")]) == 0
    depth = np.load(tmp_path / "r" / "depth.npy")
    ref = load_map_dir(out / "map").render(f.T_WC, K, 48, 64)  # (hits: test_submaps.py::test_renders_span_submaps)
    np.testing.assert_allclose(depth, ref.depth, atol=1e-5)


def test_a_directory_that_is_no_map_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc = main(["mesh", str(tmp_path / "empty"), "--out", str(tmp_path / "m.ply")])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "manifest.json" in err[0]
