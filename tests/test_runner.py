import json

import numpy as np
import pytest
import yaml

from neural_mapping.cli import main
from neural_mapping.config import load_yaml
from neural_mapping.io.synthetic import synthetic_sequence
from neural_mapping.mapper import Mapper
from neural_mapping.runner import RunOptions, run_mapping

SMALL_YAML = {
    "device": "cpu",
    "encoding": {"hash_log2_table": 12, "hash_levels": 6, "hash_finest_m": 0.05},
    "train": {"rays_per_step": 256, "steps_per_frame": 2},
    "render": {"n_stratified": 4, "n_surface": 4, "render_samples": 32},
    "mesh": {"voxel_m": 0.1},
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("runner")
    data = root / "syn"
    assert main(["synth", "--out", str(data), "--frames", "8", "--size", "64", "48"]) == 0
    cfg = root / "small.yaml"
    cfg.write_text(yaml.safe_dump(SMALL_YAML))
    return root, data, cfg


def test_map_command_writes_outputs_and_holds_out_frames(dataset, capsys):
    root, data, cfg = dataset
    out = root / "out"
    rc = main(["map", str(data), "--out", str(out), "--config", str(cfg), "--exclude-every", "4", "--quiet"])
    assert rc == 0
    for name in ("map.pt", "mesh.ply", "config.yaml", "metrics.json"):
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    assert m["frames_read"] == 8 and m["frames_held_out"] == 2 and m["frames_added"] == 6
    assert [h["index"] for h in m["held_out"]] == [0, 4]
    assert m["steps"] == 6 * 2 and m["steps_during_frames"] == 12
    assert m["rays_per_s"] > 0 and m["samples_per_s"] > m["rays_per_s"]
    for h in m["held_out"]:  # 12 small steps: the map may not have a surface yet (then depth L1 is NaN)
        assert 0.0 <= h["hit_ratio"] <= 1.0 and h["stride"] == 1
        assert np.isnan(h["depth_l1_m"]) == (h["hit_ratio"] == 0.0)
    assert set(m["final_terms"]) == {"sdf", "free", "eikonal", "depth", "color"}
    # the saved config is the resolved one: preset + yaml
    saved = load_yaml(out / "config.yaml")
    assert saved.train.rays_per_step == 256 and saved.encoding.hash_log2_table == 12
    assert "held out: 2 frames" in capsys.readouterr().out


def test_render_command_matches_mapper(dataset, tmp_path):
    root, data, cfg = dataset
    out = root / "out2"
    assert main(["map", str(data), "--out", str(out), "--config", str(cfg), "--quiet", "--no-mesh"]) == 0
    assert not (out / "mesh.ply").exists()
    from neural_mapping.mapfile import load_map

    seq = synthetic_sequence(n_frames=8, width=64, height=48)
    f = seq.frames[3]
    pose = tmp_path / "pose.txt"
    np.savetxt(pose, f.T_WC)
    K = f.K
    rd = tmp_path / "render"
    rc = main(["render", str(out / "map.pt"), "--pose", str(pose), "--intrinsics", str(K[0, 0]), str(K[1, 1]),
               str(K[0, 2]), str(K[1, 2]), "--size", "64", "48", "--out", str(rd)])
    assert rc == 0
    from PIL import Image

    depth = np.load(rd / "depth.npy")
    assert depth.shape == (48, 64) and depth.dtype == np.float32
    mm = np.asarray(Image.open(rd / "depth.png"))
    assert mm.dtype == np.uint16 and np.array_equal(mm, np.round(depth * 1000).astype(np.uint16))
    col = np.asarray(Image.open(rd / "color.png"))
    assert col.shape == (48, 64, 3)
    m = load_map(out / "map.pt")
    ref = m.render(np.loadtxt(pose), K, 48, 64)
    assert np.allclose(ref.depth, depth, atol=1e-5)
    assert np.array_equal(col, (np.clip(ref.color, 0, 1) * 255 + 0.5).astype(np.uint8))


def test_render_command_bad_pose_is_one_line_exit_2(dataset, tmp_path, capsys):
    root, data, cfg = dataset
    pose = tmp_path / "pose.txt"
    pose.write_text("1 0 0\n0 1 0\n")
    rc = main(["render", str(root / "nope.pt"), "--pose", str(pose), "--intrinsics", "50", "50", "32", "24",
               "--size", "64", "48", "--out", str(tmp_path / "r")])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pose.txt" in err[0]


def test_map_command_bad_input(tmp_path, capsys):
    rc = main(["map", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--quiet"])
    assert rc == 2
    assert "missing" in capsys.readouterr().err


def test_realtime_trains_between_frames(dataset):
    root, data, cfg = dataset
    c = load_yaml(cfg)
    seq = synthetic_sequence(n_frames=5, width=64, height=48)
    res = run_mapping(seq.frames, c, RunOptions(realtime=True, rate_hz=5.0, progress=False))
    m = res.metrics
    # frames every 0.2 s: training fills the gaps after the first frame; no steps_per_frame bursts
    assert m.frames_added == 5 and m.steps_during_frames > 0 and m.steps == m.steps_during_frames
    assert m.wall_s >= 4 / 5.0


def test_invalid_frames_are_counted_not_fatal(dataset):
    root, data, cfg = dataset
    c = load_yaml(cfg)
    seq = synthetic_sequence(n_frames=4, width=64, height=48)
    seq.frames[1].depth_m[:] = 0.0  # no depth at all
    res = run_mapping(seq.frames, c, RunOptions(progress=False, max_frames=3))
    assert res.metrics.frames_read == 3 and res.metrics.frames_rejected == 1 and res.metrics.frames_added == 2
    assert isinstance(res.mapper, Mapper)


def test_realtime_input_faster_than_training_drops_oldest(dataset):
    root, data, cfg = dataset
    c = load_yaml(cfg)
    seq = synthetic_sequence(n_frames=20, width=64, height=48)
    res = run_mapping(seq.frames, c, RunOptions(realtime=True, rate_hz=1000.0, queue_size=2, frames_per_step=1,
                                                progress=False))
    m = res.metrics
    # frames every 1 ms, a step takes longer: the queue (2 frames) overflows; every frame is either
    # integrated or dropped, the last frames are integrated, one step follows each integration
    assert m.frames_dropped > 0
    assert m.frames_added + m.frames_dropped == 20
    assert res.mapper.keyframes.latest.stamp_ns == seq.frames[-1].stamp_ns
    assert m.steps >= m.frames_added
