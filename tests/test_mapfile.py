"""Map file: save -> load -> identical answers, resume training, refusal of bad files."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from neural_mapping.config import apply_overrides, preset
from neural_mapping.errors import InputError
from neural_mapping.io.synthetic import synthetic_sequence
from neural_mapping.mapfile import FORMAT_VERSION, MAGIC, MapFileError, load_map, load_state, read_header, save_map
from neural_mapping.mapper import Mapper

SMALL = {
    "encoding.hash_log2_table": 12,
    "encoding.hash_levels": 8,
    "train.rays_per_step": 256,
    "render.n_stratified": 4,
    "render.n_surface": 4,
}


def small_cfg():
    return apply_overrides(preset("cpu"), SMALL)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    seq = synthetic_sequence(n_frames=6, width=64, height=48)
    m = Mapper(small_cfg())
    for f in seq.frames:
        assert m.add_frame(f)
    m.step(25)  # enough for the field to cross zero (a mesh exists); far from converged
    return m


@pytest.fixture
def saved(trained, tmp_path):
    return save_map(trained, tmp_path / "map.pt", include_keyframes=True)


def test_save_load_gives_identical_queries_renders_and_coverage(trained, saved):
    m2 = load_map(saved)
    pts = np.random.default_rng(0).uniform(-3, 3, size=(2000, 3)).astype(np.float32)
    a = trained.query(pts, want_gradient=True, want_color=True)
    b = m2.query(pts, want_gradient=True, want_color=True)
    np.testing.assert_array_equal(a.sdf, b.sdf)
    np.testing.assert_array_equal(a.gradient, b.gradient)
    np.testing.assert_array_equal(a.occupancy, b.occupancy)
    np.testing.assert_array_equal(a.color, b.color)
    for x, y in zip(trained.bounds(), m2.bounds()):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(trained.coverage.observed(pts), m2.coverage.observed(pts))
    assert m2.cfg == trained.cfg
    assert m2.stats.steps == trained.stats.steps and m2.stats.frames_added == trained.stats.frames_added


def test_header_is_readable_json_with_version_and_resolved_config(trained, saved):
    header, offset = read_header(saved)
    assert header["format_version"] == FORMAT_VERSION
    assert header["config"]["encoding"]["hash_log2_table"] == 12
    assert header["kind"] == "sdf" and header["keyframes"] is True
    assert offset + header["payload_bytes"] == os.path.getsize(saved)
    raw = open(saved, "rb").read(200)
    assert raw.startswith(MAGIC)


def test_training_resumes_from_a_loaded_map(trained, saved, tmp_path):
    m2 = load_map(saved)
    assert len(m2.keyframes) == len(trained.keyframes) > 0
    steps = m2.stats.steps
    s = m2.step(3)
    assert np.isfinite(s.loss) and m2.stats.steps == steps + 3
    # without keyframes the map still answers and can take new frames and train
    light = save_map(trained, tmp_path / "light.pt", include_keyframes=False)
    assert os.path.getsize(light) < os.path.getsize(saved)
    m3 = load_map(light)
    assert m3.add_frame(synthetic_sequence(n_frames=2, width=64, height=48, seed=1).frames[0])
    assert np.isfinite(m3.step(2).loss)


def test_truncated_file_is_refused_and_a_failed_save_keeps_the_previous_file(trained, saved, tmp_path, monkeypatch):
    data = open(saved, "rb").read()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) - 1000])
    with pytest.raises(MapFileError, match=r"cut.pt: map file is truncated \(\d+ of \d+ payload bytes"):
        load_map(cut)
    # a save that dies half-way (here: the disk "fills" during the write) leaves the old file
    before = saved.read_bytes()

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        save_map(trained, saved)
    monkeypatch.undo()
    assert saved.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    assert load_map(saved).stats.steps == trained.stats.steps


def test_corrupted_wrong_version_and_foreign_files_are_refused(saved, tmp_path):
    data = bytearray(saved.read_bytes())
    data[-50] ^= 0xFF
    bad = tmp_path / "flip.pt"
    bad.write_bytes(bytes(data))
    with pytest.raises(MapFileError, match="checksum mismatch"):
        load_map(bad)

    header, offset = read_header(saved)
    header["format_version"] = 99
    future = tmp_path / "future.pt"
    future.write_bytes(MAGIC + json.dumps(header).encode() + b"\n" + saved.read_bytes()[offset:])
    with pytest.raises(MapFileError, match="format version 99 is not supported"):
        load_map(future)

    foreign = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(3)}, foreign)
    with pytest.raises(MapFileError, match="not a neural_mapping map file"):
        load_map(foreign)
    with pytest.raises(MapFileError, match="not found"):
        load_map(tmp_path / "nope.pt")
    assert issubclass(MapFileError, InputError)


def test_state_with_numpy_arrays_round_trips_exactly(saved):
    d = load_state(saved)
    assert isinstance(d["bounds_lo"], np.ndarray) and d["bounds_lo"].dtype == np.float64
    kf = d["keyframes"]["keyframes"][0]
    assert isinstance(kf["T_WC"], np.ndarray) and kf["T_WC"].shape == (4, 4)


# ----------------------------------------------------------------------------- CLI on a real saved map

def cli(*argv) -> int:
    from neural_mapping.cli import main

    return main([str(a) for a in argv])


def test_cli_mesh_query_occupancy_on_a_saved_map(trained, saved, tmp_path, capsys):
    import open3d as o3d

    from neural_mapping import products as P

    out = tmp_path / "mesh.ply"
    assert cli("mesh", saved, "--voxel", "0.05", "--out", out) == 0
    mesh = o3d.io.read_triangle_mesh(str(out))
    assert len(mesh.triangles) > 0 and mesh.has_vertex_colors()
    ref = P.MeshExtractor(trained, voxel_m=0.05).extract()
    assert len(mesh.triangles) == len(ref.triangles)

    pts = np.random.default_rng(2).uniform(-2, 2, size=(5000, 3)).astype(np.float32)
    np.save(tmp_path / "P.npy", pts)
    assert cli("query", saved, "--points", tmp_path / "P.npy", "--out", tmp_path / "Q.npz", "--chunk", 1000) == 0
    q = np.load(tmp_path / "Q.npz")
    direct = trained.query(pts, want_gradient=True)
    assert q["sdf"].shape == (5000,) and q["gradient"].shape == (5000, 3) and q["occupancy"].shape == (5000,)
    np.testing.assert_allclose(q["sdf"], direct.sdf, atol=1e-6)
    np.testing.assert_allclose(q["gradient"], direct.gradient, atol=1e-5)
    np.testing.assert_array_equal(q["occupancy"], direct.occupancy)

    assert cli("occupancy", saved, "--z-min", 0.2, "--z-max", 1.0, "--resolution", 0.1, "--out", tmp_path / "occ") == 0
    back = P.read_occupancy_map(str(tmp_path / "occ.yaml"))
    sl = P.occupancy_slice_2d(trained, 0.2, 1.0, 0.1)
    np.testing.assert_array_equal(back.data, sl.data)
    np.testing.assert_allclose(back.origin_xy, sl.origin_xy)
    assert "wrote" in capsys.readouterr().out


def test_cli_bad_input_is_one_line_and_exit_2(saved, tmp_path, capsys):
    np.save(tmp_path / "bad.npy", np.zeros((4, 2), np.float32))
    cases = [
        (("query", saved, "--points", tmp_path / "bad.npy", "--out", tmp_path / "q.npz"), "shape (N, 3)"),
        (("query", saved, "--points", tmp_path / "none.npy", "--out", tmp_path / "q.npz"), "points file not found"),
        (("mesh", tmp_path / "missing.pt", "--out", tmp_path / "m.ply"), "map file not found"),
        (("mesh", saved, "--out", tmp_path / "m.stl"), ".ply or .obj"),
        (("occupancy", saved, "--z-min", 1, "--z-max", 0.5, "--out", tmp_path / "o"), "must exceed"),
    ]
    cut = tmp_path / "cut.pt"
    cut.write_bytes(saved.read_bytes()[:-10])
    cases.append((("mesh", cut, "--out", tmp_path / "m.ply"), "truncated"))
    for argv, msg in cases:
        capsys.readouterr()
        assert cli(*argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and msg in err, err


@pytest.mark.parametrize("name", ["../x", "..", "a/b", "/etc/passwd", "a\\b", ".hidden", "", "x..y", "bad name"])
def test_bad_map_names_are_refused(name, tmp_path):
    from neural_mapping.mapfile import check_map_name, resolve_in_dir

    assert check_map_name(name) is not None
    with pytest.raises(ValueError):
        resolve_in_dir(str(tmp_path), name)


def test_good_map_name_resolves_inside_map_dir(tmp_path):
    from neural_mapping.mapfile import check_map_name, resolve_in_dir

    assert check_map_name("office_2024-01.map") is None
    p = resolve_in_dir(str(tmp_path), "office.map")
    assert p == (tmp_path / "office.map").resolve() and p.parent == tmp_path.resolve()


# ----------------------------------------------------------------------------- crafted payloads, old layouts, leftovers

def rewrite_payload(src, dst, mutate):
    """A copy of map file ``src`` at ``dst`` whose payload dict went through ``mutate``, with a
    header (length, checksum) that matches it: only the payload's content is wrong."""
    import hashlib
    import io

    header, offset = read_header(src)
    d = torch.load(io.BytesIO(src.read_bytes()[offset:]), weights_only=True)
    mutate(d)
    buf = io.BytesIO()
    torch.save(d, buf)
    payload = buf.getvalue()
    header.update(payload_bytes=len(payload), payload_sha256=hashlib.sha256(payload).hexdigest())
    dst.write_bytes(MAGIC + json.dumps(header).encode() + b"\n" + payload)
    return dst


@pytest.mark.parametrize("paths", [[["no_such_key"]], "not a list", [["cfg"]], [[]], [["bounds_lo", 7]]])
def test_a_bad_numpy_paths_entry_with_a_valid_checksum_is_a_map_file_error(saved, tmp_path, paths):
    bad = rewrite_payload(saved, tmp_path / "crafted.pt", lambda d: d.__setitem__("__numpy_paths__", paths))
    with pytest.raises(MapFileError, match="__numpy_paths__"):
        load_map(bad)


def test_a_map_file_with_the_former_dense_coverage_loads(trained, saved, tmp_path):
    """Map files written before the block-sparse coverage stored a dense volume + origin."""
    def to_dense(d):
        m = trained.coverage.observed_mask()
        surf = trained.coverage.surface_mask().mask
        state = np.where(surf, 2, np.where(m.mask, 1, 0)).astype(np.uint8)
        d["coverage"] = {"voxel_m": trained.coverage.voxel_m, "origin": torch.from_numpy(m.origin.copy()),
                         "state": torch.from_numpy(state), "n_updates": trained.coverage.n_updates}

    old = rewrite_payload(saved, tmp_path / "old.pt", to_dense)
    m2 = load_map(old)
    pts = np.random.default_rng(3).uniform(-3, 3, size=(20_000, 3))
    np.testing.assert_array_equal(m2.coverage.observed(pts), trained.coverage.observed(pts))
    assert m2.coverage.n_blocks == trained.coverage.n_blocks and m2.coverage.n_updates == trained.coverage.n_updates


def test_temporary_files_of_killed_saves_are_removed_by_the_next_save(trained, tmp_path):
    from neural_mapping.mapfile import STALE_TMP_S

    old_tmp = tmp_path / ".map.pt.ab12CD_9.tmp"  # a save killed half way: the start of a map file
    old_tmp.write_bytes(MAGIC + b'{"format_version"')
    empty_tmp = tmp_path / ".other.map.x1y2z3w4.tmp"  # killed before writing anything
    empty_tmp.write_bytes(b"")
    fresh_tmp = tmp_path / ".map.pt.zz99yy88.tmp"  # another process saving right now
    fresh_tmp.write_bytes(MAGIC)
    foreign = tmp_path / ".notes.abcdefgh.tmp"  # not ours: other content
    foreign.write_bytes(b"my notes")
    past = os.path.getmtime(old_tmp) - STALE_TMP_S - 5
    for p in (old_tmp, empty_tmp, foreign):
        os.utime(p, (past, past))
    save_map(trained, tmp_path / "map.pt")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([fresh_tmp.name, foreign.name, "map.pt"])
    assert load_map(tmp_path / "map.pt").stats.steps == trained.stats.steps


# ----------------------------------------------------------------------------- format 2: float16 tables

def _raw_payload(path):
    import io

    header, offset = read_header(path)
    return header, torch.load(io.BytesIO(path.read_bytes()[offset:]), weights_only=True)


def test_a_map_without_keyframes_stores_its_tables_as_float16_and_answers_within_micrometres(trained, tmp_path,
                                                                                            monkeypatch):
    import neural_mapping.mapfile as mapfile

    light = save_map(trained, tmp_path / "light.pt")
    header, raw = _raw_payload(light)
    assert header["format_version"] == FORMAT_VERSION == 2 and header["tables"] == "float16"
    halves = raw["__half_field_keys__"]
    assert halves, "no tensor was stored as float16"
    field_fp32 = trained.field.state_dict()
    big = sum(v.numel() for v in field_fp32.values() if v.numel() >= 1 << 14)
    assert all(raw["field"][k].dtype == torch.float16 for k in halves)
    assert sum(raw["field"][k].numel() for k in halves) == big  # every table, and only tables
    assert all(raw["field"][k].dtype == torch.float32 for k in raw["field"] if k not in halves)  # MLPs exact
    # two bytes saved per table entry, against the same map with float32 tables
    monkeypatch.setattr(mapfile, "HALF_MIN_NUMEL", 1 << 62)
    full = save_map(trained, tmp_path / "full.pt")
    monkeypatch.undo()
    saved_bytes = os.path.getsize(full) - os.path.getsize(light)
    assert abs(saved_bytes - 2 * big) < 0.02 * big
    m2 = load_map(light)
    assert all(p.dtype == torch.float32 for p in m2.field.parameters())
    pts = np.random.default_rng(5).uniform(-2, 2, size=(4000, 3)).astype(np.float32)
    a = trained.query(pts, want_gradient=True)
    b = m2.query(pts, want_gradient=True)
    assert np.abs(a.sdf - b.sdf).max() < 1e-4
    assert np.abs(a.gradient - b.gradient).max() < 1e-2
    # training continues from the loaded (float32 again) tables
    assert m2.add_frame(synthetic_sequence(n_frames=2, width=64, height=48, seed=1).frames[0])
    assert np.isfinite(m2.step(2).loss)


def test_a_map_with_keyframes_keeps_float32_tables(saved):
    header, raw = _raw_payload(saved)
    assert header["tables"] == "float32" and raw["__half_field_keys__"] == []


def test_a_format_1_file_is_read_as_it_is(trained, saved, tmp_path):
    header, offset = read_header(saved)
    header["format_version"] = 1
    header.pop("tables")
    old = tmp_path / "v1.pt"

    def drop_half_keys(d):
        d.pop("__half_field_keys__")

    rewrite_payload(saved, old, drop_half_keys)
    h2, off2 = read_header(old)
    h2["format_version"] = 1
    old.write_bytes(MAGIC + json.dumps(h2).encode() + b"\n" + old.read_bytes()[off2:])
    m2 = load_map(old)
    pts = np.random.default_rng(6).uniform(-2, 2, size=(500, 3)).astype(np.float32)
    np.testing.assert_array_equal(m2.query(pts).sdf, trained.query(pts).sdf)


def test_a_bad_half_keys_entry_is_a_map_file_error(tmp_path, trained):
    light = save_map(trained, tmp_path / "light.pt")
    bad = rewrite_payload(light, tmp_path / "crafted.pt", lambda d: d.__setitem__("__half_field_keys__", ["nope"]))
    with pytest.raises(MapFileError, match="__half_field_keys__"):
        load_map(bad)
