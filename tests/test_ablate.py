"""`neural-mapping ablate` on a tiny scene: the files, a row per variant, finite numbers where they apply."""

import json
import math

import pytest

from neural_mapping.ablation import select
from neural_mapping.ablation_report import judge_claims
from neural_mapping.cli import main


def test_ablate_tiny_scene(tmp_path):
    data = tmp_path / "room"
    assert main(["synth", "--out", str(data), "--frames", "6", "--size", "32", "24"]) == 0
    out = tmp_path / "abl"
    variants = ["sdf/relu", "nerf/fourier"]
    assert main(["ablate", str(data), "--out", str(out), "--seconds", "0.3", "--exclude-every", "3",
                 "--gt-mesh", str(data / "gt_mesh.ply"), "--variants", ",".join(variants)]) == 0
    for name in ("ablation.json", "ablation.md", "views.png", "slices.png"):
        assert (out / name).stat().st_size > 0, name
    rep = json.loads((out / "ablation.json").read_text())
    rows = {r["name"]: r for r in rep["rows"]}
    assert list(rows) == variants
    for r in rows.values():
        for k in ("psnr_db", "fscore_5cm", "normal_err_deg", "train_s"):
            assert math.isfinite(r[k]), (r["name"], k, r[k])
        assert r["params"] > 0 and r["steps"] > 0
    assert math.isfinite(rows["sdf/relu"]["eikonal_err"]) or rows["sdf/relu"]["extra"]["mesh_triangles"] == 0
    assert math.isnan(rows["nerf/fourier"]["eikonal_err"])  # SDF only
    md = (out / "ablation.md").read_text()
    assert all(f"| {v} |" in md for v in variants) and "claim 5" in md


def test_claims_judged_from_numbers():
    rows = [{"name": "sdf/relu", "psnr_db": 18.0}, {"name": "sdf/fourier", "psnr_db": 22.0},
            {"name": "mirror/plain", "phantom_m2": 1.0, "psnr_db": 20.0},
            {"name": "mirror/reflective", "phantom_m2": 0.4, "psnr_db": 21.0}]
    c = {(x["claim"], x["text"].rsplit("(", 1)[-1]): x["held"] for x in judge_claims(rows)}
    assert c[("1-2", "sdf)")] is True and c[("1-2", "nerf)")] is None
    assert [x["held"] for x in judge_claims(rows) if x["claim"] == "6"] == [True]


def test_unknown_variant_refused():
    with pytest.raises(ValueError, match="unknown variants"):
        select(["sdf/nope"])
