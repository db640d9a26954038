"""Dataset layouts: synthetic -> each layout -> reader round trips, TUM association and
pose interpolation against hand-computed values, bad frames skipped and counted."""

import numpy as np
import pytest
from PIL import Image

from neural_mapping.errors import InputError
from neural_mapping.io.base import format_stamp, parse_stamp_ns
from neural_mapping.io.datasets import associate, write_3dmatch, write_replica, write_tum
from neural_mapping.io.sources import detect, open_source
from neural_mapping.io.synthetic import synthetic_sequence


@pytest.fixture(scope="module")
def seq():
    return synthetic_sequence(n_frames=5, width=48, height=36, seed=1)


def _check_same(frames, ref, depth_tol, rgb_exact=True, stamps=True):
    assert len(frames) == len(ref)
    for a, b in zip(frames, ref):
        assert np.array_equal(a.K, b.K)
        assert np.allclose(a.T_WC, b.T_WC, atol=1e-8)
        assert np.abs(a.depth_m - b.depth_m).max() <= depth_tol
        assert np.array_equal(a.depth_m > 0, b.depth_m > 0)
        if rgb_exact:
            assert np.array_equal(a.rgb, b.rgb)
        else:  # JPEG
            assert np.abs(a.rgb.astype(int) - b.rgb).mean() < 5.0
        if stamps:
            assert a.stamp_ns == b.stamp_ns


def test_3dmatch_round_trip(seq, tmp_path):
    write_3dmatch(seq.frames, tmp_path)
    src = open_source(tmp_path)
    assert src.fmt == "3dmatch" and len(src) == 5
    frames = list(src)
    _check_same(frames, seq.frames, depth_tol=0.0005 + 1e-6, stamps=False)  # mm PNG
    dt = np.diff([f.stamp_ns for f in frames])
    assert np.all(dt == [33333333, 33333334, 33333333, 33333333])  # frame number / 30 fps, rounded
    assert src.skipped == 0


def test_replica_round_trip_jpg_and_png(seq, tmp_path):
    write_replica(seq.frames, tmp_path / "jpg")
    src = open_source(tmp_path / "jpg")
    assert src.fmt == "replica" and src.depth_scale == 6553.5
    _check_same(list(src), seq.frames, depth_tol=0.5 / 6553.5 + 1e-6, rgb_exact=False, stamps=False)
    # the depth scale comes from cam_params.json
    write_replica(seq.frames, tmp_path / "png", scale=1000.0, color_ext="png")
    src = open_source(tmp_path / "png", fmt="replica")
    assert src.depth_scale == 1000.0
    _check_same(list(src), seq.frames, depth_tol=0.0005 + 1e-6, stamps=False)


def test_tum_round_trip(seq, tmp_path):
    write_tum(seq.frames, tmp_path)
    src = open_source(tmp_path)
    assert src.fmt == "tum"
    _check_same(list(src), seq.frames, depth_tol=0.5 / 5000 + 1e-6)  # stamps exact


def test_stamp_text_is_exact():
    assert parse_stamp_ns("1305031102.175304") == 1305031102175304000
    assert parse_stamp_ns("1305031102.1753041") == 1305031102175304100
    assert format_stamp(1700000000_033333000) == "1700000000.033333"
    assert parse_stamp_ns(format_stamp(1700000000_033333123)) == 1700000000_033333123


def test_tum_association_hand_computed():
    ms = 1_000_000
    rgb = np.array([1000, 1033, 1066, 1200, 1210]) * ms
    depth = np.array([1010, 1030, 1100, 1205]) * ms
    # 1000-1010 (10 ms), 1033-1030 (3 ms), 1066: nothing within 20 ms, 1200/1210 both near 1205:
    # 5 ms each; the first seen of equal distances wins, 1210 stays single
    assert associate(rgb, depth, 20 * ms) == [(0, 0), (1, 1), (3, 3)]
    # closest pair first: 1204 is nearer to 1205 than 1200 is
    assert associate(np.array([1200, 1204]) * ms, np.array([1205]) * ms, 20 * ms) == [(1, 0)]


def _png(path, arr):
    Image.fromarray(arr).save(path)


def test_tum_pose_interpolation_hand_computed(tmp_path):
    """gt at 1.0 s (identity) and 1.2 s (t = (1, 2, 3), 90 deg about z); a frame at 1.05 s is a
    quarter of the way: t = (0.25, 0.5, 0.75), 22.5 deg about z. 0.9 s and 1.25 s are outside."""
    (tmp_path / "rgb").mkdir()
    (tmp_path / "depth").mkdir()
    rgb_lines, depth_lines = [], []
    for k, (tr, td) in enumerate([("0.900000", "0.905000"), ("1.050000", "1.050000"), ("1.250000", "1.240000")]):
        _png(tmp_path / "rgb" / f"{k}.png", np.full((4, 6, 3), 10 * k, np.uint8))
        _png(tmp_path / "depth" / f"{k}.png", np.full((4, 6), 5000 * (k + 1), np.uint16))
        rgb_lines.append(f"{tr} rgb/{k}.png")
        depth_lines.append(f"{td} depth/{k}.png")
    (tmp_path / "rgb.txt").write_text("# color images\n" + "\n".join(rgb_lines) + "\n")
    (tmp_path / "depth.txt").write_text("# depth\n" + "\n".join(depth_lines) + "\n")
    s = np.sin(np.pi / 4)
    (tmp_path / "groundtruth.txt").write_text("# timestamp tx ty tz qx qy qz qw\n"
                                              "1.0 0 0 0 0 0 0 1\n"
                                              f"1.2 1 2 3 0 0 {s} {s}\n")
    src = open_source(tmp_path)
    frames = list(src)
    assert len(frames) == 1 and src.dropped_no_pose == 2
    f = frames[0]
    assert f.stamp_ns == 1_050_000_000
    assert np.allclose(f.T_WC[:3, 3], [0.25, 0.5, 0.75])
    a = np.pi / 8
    assert np.allclose(f.T_WC[:3, :3], [[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    assert np.allclose(f.depth_m, 2.0) and f.rgb[0, 0, 0] == 10
    assert np.allclose(f.K, [[525, 0, 319.5], [0, 525, 239.5], [0, 0, 1]])  # ROS default without a file


def test_3dmatch_invalid_values_sequences_and_corrupt_frames(seq, tmp_path):
    root = tmp_path / "scene"
    write_3dmatch(seq.frames[:2], root / "seq-01")
    write_3dmatch(seq.frames[2:], root / "seq-02")
    (root / "seq-01" / "camera-intrinsics.txt").rename(root / "camera-intrinsics.txt")  # 3DMatch: at scene level
    (root / "seq-02" / "camera-intrinsics.txt").unlink()
    # 65535 is invalid
    d = np.array(Image.open(root / "seq-01" / "frame-000000.depth.png"))
    d[0, :5] = 65535
    Image.fromarray(d).save(root / "seq-01" / "frame-000000.depth.png")
    # a corrupt colour PNG, a NaN pose and a missing depth: skipped and counted
    (root / "seq-02" / "frame-000000.color.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (root / "seq-02" / "frame-000001.pose.txt").write_text("nan 0 0 0\n0 1 0 0\n0 0 1 0\n0 0 0 1\n")
    (root / "seq-02" / "frame-000002.depth.png").unlink()
    src = open_source(root)
    assert detect(root) == "3dmatch" and len(src) == 5
    frames = list(src)
    assert len(frames) == 2 and src.skipped == 3
    assert any("frame-000000" in r and "seq-02" in r for r in src.skip_reasons)
    assert np.all(frames[0].depth_m[0, :5] == 0) and np.all(frames[0].depth_m[1] > 0)
    assert frames[1].stamp_ns > frames[0].stamp_ns


def test_bad_dataset_inputs(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        open_source(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty directory"):
        open_source(tmp_path / "empty")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="not a recognised dataset"):
        open_source(tmp_path / "other")
    with pytest.raises(InputError, match="no frame-XXXXXX"):
        open_source(tmp_path / "other", fmt="3dmatch")
    r = tmp_path / "rep"
    (r / "results").mkdir(parents=True)
    (r / "traj.txt").write_text("1 0 0\n")
    _png(r / "results" / "frame000000.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(InputError, match=r"traj.txt: line 1 has 3 numbers"):
        open_source(r)
    (r / "traj.txt").write_text(" ".join(map(str, np.eye(4).ravel())) + "\n")
    (r / "cam_params.json").write_text("{not json")
    with pytest.raises(InputError, match="cam_params.json: malformed"):
        open_source(r)
    t = tmp_path / "tum"
    t.mkdir()
    (t / "rgb.txt").write_text("1.0 rgb/a.png\n")
    (t / "depth.txt").write_text("x.y depth/a.png\n")
    with pytest.raises(InputError, match=r"depth.txt: line 1: 'x.y' is not a time stamp"):
        open_source(t)
    (t / "depth.txt").write_text("1.0 depth/a.png\n")
    with pytest.raises(InputError, match="groundtruth.txt: missing"):
        open_source(t)


def test_writers_refuse_mixed_cameras(seq, tmp_path):
    other = synthetic_sequence(n_frames=1, width=40, height=30)
    with pytest.raises(ValueError, match="different intrinsics"):
        write_3dmatch([seq.frames[0], other.frames[0]], tmp_path)



def test_3dmatch_jpg_colour_and_7scenes_intrinsics(seq, tmp_path):
    write_3dmatch(seq.frames[:2], tmp_path)
    for p in tmp_path.glob("*.color.png"):
        Image.open(p).save(p.with_suffix(".jpg"), quality=95)
        p.unlink()
    (tmp_path / "camera-intrinsics.txt").unlink()  # 7-Scenes ships none
    src = open_source(tmp_path)
    frames = list(src)
    assert len(frames) == 2 and src.skipped == 0
    assert np.allclose(frames[0].K, [[585, 0, 320], [0, 585, 240], [0, 0, 1]])
    assert np.abs(frames[0].rgb.astype(int) - seq.frames[0].rgb).mean() < 5.0


def test_eight_bit_depth_pngs_are_refused_not_read_as_millimetres(seq, tmp_path):
    write_replica(seq.frames[:2], tmp_path, color_ext="png")
    p = tmp_path / "results" / "depth000001.png"
    d8 = np.clip(np.asarray(Image.open(p), dtype=np.float64) / 6553.5 * 50, 0, 255).astype(np.uint8)
    Image.fromarray(d8, "L").save(p)
    assert Image.open(p).mode == "L"
    src = open_source(tmp_path)
    frames = list(src)
    assert len(frames) == 1 and src.skipped == 1
    assert "must be a 16-bit single-channel PNG, got mode L (8-bit)" in src.skip_reasons[0]


def test_replica_traj_one_line_short_counts_the_skipped_frame(seq, tmp_path):
    write_replica(seq.frames[:4], tmp_path, color_ext="png")
    traj = tmp_path / "traj.txt"
    traj.write_text("\n".join(traj.read_text().splitlines()[:3]) + "\n")
    src = open_source(tmp_path)
    assert len(src) == 4  # the dataset lists 4 frames ...
    assert len(list(src)) == 3 and src.skipped == 1  # ... of which one has no pose
    assert "no line 4 in" in src.skip_reasons[0] and "frame000003" in src.skip_reasons[0]
    assert len(list(src)) == 3 and src.skipped == 1  # the same on every pass
