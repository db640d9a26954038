"""Submaps (neural_mapping/submaps, docs/submaps.md): the grid's blending weights, the submap bytes,
a submapped map of the synthetic room (cells of 3 m centred on the origin: borders at x, y = +-1.5 m) saved and
loaded as a directory, queries continuous across borders, no double sheet at the borders, the
resident budget with spills, and online mapping through OnlineMapper."""

from __future__ import annotations

import re

import numpy as np
import pytest

from neural_mapping.config import apply_overrides, preset
from neural_mapping.io.synthetic import synthetic_sequence
from neural_mapping.submaps import (SubmapCodecError, SubmapGrid, SubmapMap, decode_submap, encode_submap,
                                    load_map_dir, save_map_dir, submap_id)
from neural_mapping.submaps.grid import parse_submap_id
from neural_mapping.submaps.seams import border_zone, double_sheet_fraction


def room_cfg(**over):
    o = {"submaps.enabled": True, "submaps.size_m": 3.0, "submaps.overlap_m": 0.5, "submaps.max_active": 2,
         "train.rays_per_step": 1024, "encoding.hash_levels": 12}
    o.update(over)
    return apply_overrides(preset("cpu"), o)


@pytest.fixture(scope="module")
def room():
    return synthetic_sequence(n_frames=24, width=80, height=60)


@pytest.fixture(scope="module")
def trained(room, tmp_path_factory):
    """A submapped map of the room, trained 6 steps per frame, saved to a directory."""
    sm = SubmapMap(room_cfg())
    for f in room.frames:
        assert sm.add_frame(f)
        sm.step(6)
    sm.train_for(4.0)
    d = tmp_path_factory.mktemp("smap") / "map"
    save_map_dir(sm, d)
    return sm, d


def test_grid_weights_are_a_partition_of_unity_and_ids_round_trip():
    g = SubmapGrid(4.0, 1.0, 0.8)
    rng = np.random.default_rng(0)
    pts = rng.uniform(-10, 10, (2000, 3))
    total = np.zeros(len(pts))
    for i in range(-4, 4):
        for j in range(-4, 4):
            total += g.weights((i, j), pts)
    np.testing.assert_allclose(total, 1.0, atol=1e-12)
    border = np.array([[2.0, 1.0, 0.0]])  # on the edge between cells (0, 0) and (1, 0): cells are centred
    assert g.weights((0, 0), border)[0] == pytest.approx(0.5) == g.weights((1, 0), border)[0]
    assert g.weights((2, 0), np.array([[8.0, 1.0, 0.0]]))[0] == 1.0  # the core of a cell
    assert g.weights((0, 0), np.zeros((1, 3)))[0] == 1.0  # the origin is in the core of cell (0, 0)
    for key in [(0, 0), (3, -1), (-1234, 99)]:
        assert parse_submap_id(submap_id(key)) == key
    assert [k for k, _ in g.keys_near(np.array([[2.5, 0.0, 0]] * 40), 32)] == [(0, 0), (1, 0)]


def test_submaps_are_created_where_frames_see_and_only_max_active_are_trained(trained):
    sm, _ = trained
    ids = {s.id for s in sm.submaps()}
    assert {submap_id(k) for k in [(-1, 0), (0, 0), (1, 0)]} <= ids and len(ids) <= 9
    assert len(sm.active_ids()) <= 2
    assert all(s.frozen for s in sm.submaps() if s.id not in sm.active_ids())
    assert all(s.version >= 1 for s in sm.submaps())


def test_encoded_submap_round_trips_and_damage_is_refused(trained):
    sm, _ = trained
    sub = next(s for s in sm.submaps() if s.mapper is not None)
    data = encode_submap(sub)
    rec, state = decode_submap(data)
    assert (rec.id, rec.key, rec.version, rec.frame, rec.kind) == (sub.id, sub.key, sub.version, "map", "sdf")
    np.testing.assert_allclose(rec.origin_W, sub.origin_W)
    assert rec.grid == sm.grid.as_dict() and "field" in state and "keyframes" not in state
    assert len(data) < 8e6
    bad = bytearray(data)
    bad[-100] ^= 0xFF
    with pytest.raises(SubmapCodecError, match="checksum"):
        decode_submap(bytes(bad))
    with pytest.raises(SubmapCodecError, match="payload bytes"):
        decode_submap(data[:-10])
    with pytest.raises(SubmapCodecError, match="magic"):
        decode_submap(b"NEURALMAP\n" + data[9:])


def _probe_points(seed=1, n=3000):
    rng = np.random.default_rng(seed)
    return rng.uniform([-2.4, -1.9, 0.1], [2.4, 1.9, 2.5], (n, 3)).astype(np.float32)


def test_saved_directory_loads_with_the_same_answers(trained):
    sm, d = trained
    assert (d / "manifest.json").is_file() and len(list((d / "submaps").glob("*.nmsub"))) == len(sm.submaps())
    back = load_map_dir(d)
    pts = _probe_points()
    a, b = sm.query(pts, want_gradient=True), back.query(pts, want_gradient=True)
    np.testing.assert_allclose(a.sdf, b.sdf, atol=2e-4)  # active submaps: float16 tables in the files
    np.testing.assert_array_equal(a.occupancy == 0.5, b.occupancy == 0.5)  # the same observed space
    # a damaged file is refused, naming it
    f = sorted((d / "submaps").glob("*.nmsub"))[0]
    raw = f.read_bytes()
    try:
        f.write_bytes(raw[:-5])
        from neural_mapping.mapfile import MapFileError
        with pytest.raises(MapFileError, match=re.escape(f.name)):
            load_map_dir(d)
    finally:
        f.write_bytes(raw)


def test_queries_are_continuous_across_submap_borders(trained):
    sm, _ = trained
    # lines crossing the borders x = +-1.5 (and y = +-1.5) through free space and through the walls' band
    worst = 0.0
    for y, z in [(0.9, 1.3), (-0.7, 2.0), (1.6, 0.4)]:
        t = np.arange(-2.3, 2.3, 0.005)
        pts = np.stack([t, np.full_like(t, y), np.full_like(t, z)], 1)
        v = sm.query(pts).sdf
        worst = max(worst, float(np.abs(np.diff(v)).max()))
        t = np.arange(-1.9, 1.9, 0.005)
        pts = np.stack([np.full_like(t, y), t, np.full_like(t, z)], 1)
        v = sm.query(pts).sdf
        worst = max(worst, float(np.abs(np.diff(v)).max()))
    assert worst < 0.02, f"a step of 5 mm changes the blended sdf by {worst:.3f} m"


def _area_fraction_doubled(mesh, grid):
    """Area fraction with a second sheet within 2 cm, of the mesh within the blend zone of the borders."""
    return double_sheet_fraction(np.asarray(mesh.vertices), np.asarray(mesh.triangles), where=border_zone(grid))


def test_mesh_has_no_double_sheet_at_the_borders_where_unblended_submaps_would(trained):
    import open3d as o3d

    from neural_mapping.products import MeshExtractor

    sm, _ = trained
    mesh = MeshExtractor(sm.snapshot(), voxel_m=0.04, color=False).extract(full=True)
    assert len(mesh.triangles) > 5000
    blended = _area_fraction_doubled(mesh, sm.grid)
    # control: each submap meshed on its own over its whole grown box, the pieces concatenated
    cat = o3d.geometry.TriangleMesh()
    for s in sm.submaps():
        m = sm.cache.mapper_of(s) if s.mapper is None else s.mapper
        part = MeshExtractor(m, voxel_m=0.04, color=False, snapshot=False).extract(full=True)
        part.translate(s.origin_W)
        keep = sm.grid.in_grown_box(s.key, np.asarray(part.vertices))
        part.remove_vertices_by_mask(~keep)
        cat += part
    unblended = _area_fraction_doubled(cat, sm.grid)
    # this small map's own sheets are rough (a few % doubled anywhere); the borders must add none:
    # issue 16's < 1 % is measured by benchmarks/bench_scale.py on a trained floor
    zone = border_zone(sm.grid)
    elsewhere = double_sheet_fraction(np.asarray(mesh.vertices), np.asarray(mesh.triangles), where=lambda c: ~zone(c))
    assert blended <= elsewhere + 0.005, f"borders {blended:.2%} doubled, elsewhere {elsewhere:.2%}"
    assert blended < 0.03
    assert unblended > 2 * blended + 0.01, (blended, unblended)  # the measure sees overlapping submaps


def test_resident_budget_spills_and_reloads_give_the_same_answers(trained):
    _, d = trained
    pts = _probe_points(seed=2, n=2000)
    roomy = load_map_dir(d, max_resident_mb=1000)
    tight = load_map_dir(d, max_resident_mb=4)
    one = max(s.nbytes for s in roomy.submaps())
    assert 2 * min(s.nbytes for s in roomy.submaps()) > 4e6  # the tight budget holds one submap at a time
    assert tight.cache.spills >= 3
    a = roomy.query(pts, want_gradient=True, want_color=True)
    b = tight.query(pts, want_gradient=True, want_color=True)
    for x, y in [(a.sdf, b.sdf), (a.gradient, b.gradient), (a.color, b.color), (a.occupancy, b.occupancy)]:
        np.testing.assert_array_equal(x, y)
    assert tight.cache.reloads >= 3
    assert sum(s.mapper is not None for s in tight.submaps()) <= 1
    assert tight.resident_bytes() <= one


def test_renders_span_submaps(trained, room):
    sm, _ = trained
    f = room.frames[5]
    r = sm.render(f.T_WC, f.K, 60, 80)
    both = (r.depth > 0) & (f.depth_m > 0)
    assert both.mean() > 0.8
    assert float(np.median(np.abs(r.depth[both] - f.depth_m[both]))) < 0.05


def test_online_mapping_with_submaps(room):
    from neural_mapping.online import OnlineMapper

    sm = SubmapMap(room_cfg())
    core = OnlineMapper(sm, queue_size=64, frames_per_step=4)
    core.start()
    try:
        for f in room.frames[:12]:
            core.put(f)
        assert core.wait_until_drained(120.0)
        with core.map_copy() as snap:
            assert isinstance(snap, SubmapMap) and snap is not sm
            r = snap.query(np.array([[0.0, 0.0, 1.2]], np.float32))
            assert np.isfinite(r.sdf).all()
        st = core.stats()
        assert st.frames_integrated == 12 and st.steps > 0 and not st.last_error
    finally:
        assert core.stop(timeout=30.0)
    assert len(sm.submaps()) >= 2


def test_merge_takes_newer_submaps_of_other_robots_and_they_save_and_load(trained, tmp_path):
    """The fleet's and Ray's path: encoded bytes in, blended with what is there, kept by version."""
    from neural_mapping.submaps.codec import encode_state

    sm, _ = trained
    src = next(s for s in sm.submaps() if s.key == (0, 0))
    m = src.mapper if src.mapper is not None else sm.cache.mapper_of(src)
    meta = dict(src.record(), robot_id="robot/2")
    data = encode_state(meta, m.state_dict())
    other = SubmapMap(room_cfg())
    assert other.merge(data) is True
    assert other.merge(data) is False  # the same version again
    assert other.merge(encode_state(dict(meta, version=meta["version"] + 1), m.state_dict())) is True
    core = np.array([[0.3, -0.2, 1.0], [-0.5, 0.4, 0.6], [0.0, 0.0, 2.2]], np.float32)  # in cell (0, 0)'s core
    np.testing.assert_allclose(other.query(core).sdf, m.query(core - src.origin_W.astype(np.float32)).sdf, atol=1e-6)
    assert other.coverage.observed(core.astype(np.float64)).any()
    save_map_dir(other, tmp_path / "fleet")
    names = [p.name for p in (tmp_path / "fleet" / "submaps").iterdir()]
    assert names == [f"robot_2.{submap_id((0, 0))}.v{meta['version'] + 1}.nmsub"]
    back = load_map_dir(tmp_path / "fleet")
    assert [(s.robot_id, s.id) for s in back.submaps()] == [("robot/2", submap_id((0, 0)))]
    np.testing.assert_array_equal(back.query(core).sdf, other.query(core).sdf)
    with pytest.raises(SubmapCodecError, match="another grid"):
        SubmapMap(room_cfg(**{"submaps.size_m": 4.0})).merge(data)
