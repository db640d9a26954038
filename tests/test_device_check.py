"""benchmarks/device_check.sh --cpu-smoke: the GPU check's script runs end to end on the CPU with tiny
sizes and writes one results file with every row (issue 15 item 3), so the script cannot rot between the
rare runs on a GPU. The figures prove nothing about speed."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("device_check")
    env = dict(os.environ, OUT=str(out), PYTHON=sys.executable)
    r = subprocess.run(["bash", str(REPO / "benchmarks" / "device_check.sh"), "--cpu-smoke"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out, r.stdout


def test_smoke_writes_every_row_with_finite_numbers(smoke):
    import device_bench

    out, stdout = smoke
    res = json.loads((out / "device_check.json").read_text())
    assert res["smoke"] is True and res["environment"]["device"] == "cpu"
    keys = [r["key"] for r in res["rows"]]
    assert keys == [k for k, *_ in device_bench.ROWS]
    for r in res["rows"]:
        for col in ("fused", "reference", "ratio"):
            assert isinstance(r[col], (int, float)) and math.isfinite(r[col]) and r[col] >= 0, (r["key"], col, r[col])
    assert 0 <= next(r for r in res["rows"] if r["key"] == "online_integrated_pct")["fused"] <= 100
    assert "smoke: sync guard rc=0" in res["tests"]
    assert res["seconds"]["total"] < 120  # tiny sizes: well under a minute on 2 cores, with margin for load
    # the printed table is the markdown file
    md = (out / "device_check.md").read_text()
    assert md.count("\n|") == len(keys) + 2 and "| measurement |" in stdout


def test_gpu_mode_refuses_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "device_bench.py"), "--out", "/nonexistent/x"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no CUDA device" in r.stderr
