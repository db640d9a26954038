"""`neural-mapping bench` on a tiny clean scene: ours and both TSDF rows, the PNGs, finite plausible numbers."""

import json

import numpy as np

from neural_mapping.benchmark import BenchOptions, run_bench, table
from neural_mapping.config import apply_overrides, preset
from neural_mapping.io.synthetic import synthetic_sequence


def test_bench_tiny_scene_writes_rows_and_plots(tmp_path):
    seq = synthetic_sequence(n_frames=15, width=64, height=48, seed=0)
    cfg = apply_overrides(preset("cpu"), {"device": "cpu", "mesh.voxel_m": 0.05})
    opts = BenchOptions(exclude_every=5, seconds=1.0, curve_points=1, curve_views=1, n_gt_points=20_000,
                        n_free_points=3000,
                        rate_hz=60.0, plots=True, progress=False)
    r = run_bench(seq.frames, cfg, tmp_path, gt_mesh=seq.mesh, opts=opts)
    assert set(r["rows"]) == {"ours", "tsdf_2cm", "tsdf_4cm"}
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["rows"]["tsdf_4cm"]["frames_used"] == 12 == r["training_frames"]
    for name, row in r["rows"].items():
        for k in ("chamfer_l1_cm", "fscore_2cm", "completion_ratio_5cm", "held_out_depth_l1_cm", "memory_mb", "mesh_s"):
            assert np.isfinite(row[k]), (name, k)
        assert len(row["distance_errors"]) == 4
    t4 = r["rows"]["tsdf_4cm"]
    assert t4["chamfer_l1_cm"] < 5.0 and t4["fscore_5cm"] > 0.8 and t4["held_out_depth_l1_cm"] < 10
    assert r["rows"]["ours"]["memory_mb"] == (tmp_path / "map.pt").stat().st_size / 2 ** 20
    assert r["rows"]["tsdf_2cm"]["memory_mb"] > t4["memory_mb"]
    assert np.isfinite(r["ratios"]["tsdf_4cm"]["chamfer_l1_cm"])
    for png in ("curve.png", "views.png", "occupancy.png"):
        assert (tmp_path / png).stat().st_size > 500
    assert "| Chamfer-L1 (cm) |" in table(r) and "true distance 0.1-0.5 m" in table(r)
