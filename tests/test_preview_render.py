"""The preview renderer (neural_mapping.preview_render): depth, normals and colour against an analytic
scene (a sphere on a floor, the field replaced by its exact SDF), and depth against the full render
(`Mapper.render`, what `neural-mapping render` writes) on a small trained map."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from neural_mapping.camera import intrinsics
from neural_mapping.config import apply_overrides, preset
from neural_mapping.frame import Frame
from neural_mapping.io.synthetic import look_at_T_WC
from neural_mapping.mapper import Mapper
from neural_mapping.preview_render import candidates, preview

CENTER, RADIUS, FLOOR = np.array([0.0, 0.0, 0.5]), 0.5, 0.0


class _Out:
    def __init__(self, value, geo):
        self.value, self.geo = value, geo


class SphereOnFloor(nn.Module):
    """Exact SDF of a sphere resting on the plane z = 0 (their union); geo = 1 on the sphere's side."""

    kind = "sdf"

    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Tanh(), nn.Linear(1, 1))  # not a trunk the fast path knows: field(x) is used

    def forward(self, x, dirs=None):
        c = torch.as_tensor(CENTER, dtype=x.dtype)
        s_sphere = (x - c).norm(dim=-1) - RADIUS
        s_floor = x[:, 2] - FLOOR
        return _Out(torch.minimum(s_sphere, s_floor), (s_sphere < s_floor).to(x.dtype)[:, None])

    def color(self, geo, dirs, pts=None, normal=None):
        red, grey = torch.tensor([0.9, 0.1, 0.1]), torch.tensor([0.5, 0.5, 0.5])
        return geo * red + (1 - geo) * grey


def analytic_depth(T_WC, K, H, W):
    """z-depth (H, W) and unit normals (H, W, 3) of the scene's first hit (0 = none)."""
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    dC = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1)
    d = dC @ T_WC[:3, :3].T  # z-scaled: t is z-depth
    o = T_WC[:3, 3]
    oc = o - CENTER
    a, b, c = (d * d).sum(-1), 2 * (d @ oc), oc @ oc - RADIUS ** 2
    disc = b * b - 4 * a * c
    t_s = np.where(disc > 0, (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a), np.inf)
    t_s = np.where(t_s > 0, t_s, np.inf)
    t_f = np.where(d[..., 2] < 0, (FLOOR - o[2]) / np.where(d[..., 2] < 0, d[..., 2], -1), np.inf)
    t = np.minimum(t_s, t_f)
    n = np.where((t_s <= t_f)[..., None], (o + t_s[..., None] * d - CENTER) / RADIUS, [0.0, 0.0, 1.0])
    hit = np.isfinite(t) & (t < 8.0)
    return np.where(hit, t, 0.0), np.where(hit[..., None], n, 0.0), t_s <= t_f


def analytic_map():
    cfg = apply_overrides(preset("cpu"), {"encoding.hash_log2_table": 10, "encoding.hash_levels": 2, "field.hidden": 8})
    m = Mapper(cfg)
    K = intrinsics(60.0, 60.0, 39.5, 29.5)
    for a in np.radians(np.arange(0, 360, 45)):  # eight views around the sphere
        T = look_at_T_WC(np.array([2.2 * np.cos(a), 2.2 * np.sin(a), 1.5]), CENTER)
        z, _, _ = analytic_depth(T, K, 60, 80)
        m.add_frame(Frame(np.zeros((60, 80, 3), np.uint8), z.astype(np.float32), K, T))
    m.field = SphereOnFloor()
    return m


def test_preview_depth_normals_and_colour_match_an_analytic_scene():
    m = analytic_map()
    voxel = m.cfg.occupancy.resolution_m
    T = look_at_T_WC(np.array([1.4, -1.8, 1.2]), CENTER)
    H, W = 96, 128
    K = intrinsics(90.0, 90.0, (W - 1) / 2, (H - 1) / 2)
    z, n, on_sphere = analytic_depth(T, K, H, W)
    p = preview(m, T, K, H, W)
    # the floor is only observed near the sphere: compare where the analytic hit is in a candidate cell
    c = candidates(m)
    cell = np.floor(_points(T, K, z).reshape(-1, 3) / c.cell_m).astype(int) - c.origin
    ok = np.all((cell >= 0) & (cell < c.mask.shape), 1)
    seen = np.zeros(H * W, bool)
    seen[ok] = c.mask[tuple(cell[ok].T)]
    seen = seen.reshape(H, W) & (z > 0)
    # a ray grazing the sphere within eps of it converges there (sphere tracing, as the full render):
    # leave out the sphere's outline
    from scipy.ndimage import binary_dilation, binary_erosion

    seen &= ~(binary_dilation(on_sphere, iterations=2) & ~binary_erosion(on_sphere, iterations=2))
    assert seen.mean() > 0.3 and on_sphere[seen].mean() > 0.1
    assert p.hit[seen].mean() > 0.98
    err = np.abs(p.depth - z)[seen & p.hit]
    assert np.median(err) < 0.005 and err.max() < voxel, (np.median(err), err.max())
    cos = (p.normals * n).sum(-1)[seen & p.hit]
    assert np.median(cos) > 0.999 and cos.min() > 0.9
    sphere_px, floor_px = seen & p.hit & on_sphere, seen & p.hit & ~on_sphere
    np.testing.assert_allclose(np.median(p.color[sphere_px], 0), [0.9, 0.1, 0.1], atol=1e-6)
    np.testing.assert_allclose(np.median(p.color[floor_px], 0), [0.5, 0.5, 0.5], atol=1e-6)
    assert (p.depth[~p.hit] == 0).all() and (p.normals[~p.hit] == 0).all()
    # a lower resolution repeats each preview pixel: same geometry at the block centres
    p2 = preview(m, T, K, H, W, scale=2)
    assert p2.depth.shape == (H, W) and p2.stats["rays"] == (H // 2) * (W // 2)
    err2 = np.abs(p2.depth - z)[seen & p2.hit & p.hit]
    assert np.median(err2) < 0.05


def _points(T, K, z):
    H, W = z.shape
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    pc = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], -1)
    return pc @ T[:3, :3].T + T[:3, 3]


def test_candidate_cells_cover_the_observed_surface_and_skip_unobserved_space():
    m = analytic_map()
    c = candidates(m)
    assert c is not None and 0 < c.mask.mean() < 0.8
    idx = lambda p: tuple(np.floor(np.asarray(p) / c.cell_m).astype(int) - c.origin)  # noqa: E731
    top = CENTER + [0, 0, RADIUS]  # seen from every camera
    assert c.mask[idx(top)]
    assert not c.mask[idx(CENTER)]  # the sphere's centre is 0.5 m behind its surface
    assert candidates(Mapper(m.cfg)) is None  # nothing observed: no candidates, an empty preview
    e = preview(Mapper(m.cfg), np.eye(4), intrinsics(10.0, 10.0, 3.5, 2.5), 6, 8)
    assert not e.hit.any()


@pytest.fixture(scope="module")
def small_map():
    from neural_mapping.io.synthetic import synthetic_sequence

    seq = synthetic_sequence(n_frames=12, width=64, height=48, seed=0)
    cfg = apply_overrides(preset("cpu"), {
        "encoding.hash_log2_table": 12, "encoding.hash_levels": 8, "train.rays_per_step": 512, "field.hidden": 32,
        "render.render_samples": 96})
    m = Mapper(cfg)
    for f in seq.frames:
        m.add_frame(f)
        m.step(3)
    return m, seq


def test_preview_depth_agrees_with_the_full_render_on_a_trained_map(small_map):
    m, seq = small_map
    H, W = 60, 80
    fov = math.radians(60)
    f = 0.5 * H / math.tan(fov / 2)
    K = intrinsics(f, f, (W - 1) / 2, (H - 1) / 2)
    for T in (seq.frames[3].T_WC, seq.frames[9].T_WC):
        full = m.render(T, K, H, W)
        p = preview(m, T, K, H, W)
        both = (full.depth > 0) & p.hit
        assert (full.depth > 0).mean() > 0.5
        assert both.sum() >= 0.9 * (full.depth > 0).sum()  # the preview finds the surfaces the full render does
        d = np.abs(full.depth - p.depth)[both]
        assert np.median(d) < 0.02 and np.percentile(d, 90) < 0.05, (np.median(d), np.percentile(d, 90))
        c = np.abs(full.color - p.color).max(-1)[both]
        assert np.median(c) < 0.05  # colour from the same head at (nearly) the same point
        assert p.stats["samples"] < 0.5 * H * W * m.cfg.render.render_samples


def test_the_viewer_panel_renders_the_preview_in_bands(monkeypatch):
    import neural_mapping.viewer.look as look
    from neural_mapping.viewer.look import LookRequest, camera_K, depth_image, render_look

    m = analytic_map()
    T = look_at_T_WC(np.array([1.4, -1.8, 1.2]), CENTER)
    monkeypatch.setattr(look, "BAND_PIXELS", 1000)
    req = LookRequest(T, math.radians(60), 4 / 3, 36, "depth")  # 48 x 36, the default quality: the preview
    jobs = []
    img, info = render_look(lambda fn: jobs.append(1) or fn(m), req)
    assert req.quality == "preview" and info["bands"] == len(jobs) == 2
    p = preview(m, T, camera_K(req.fov_rad, 48, 36), 36, 48)
    assert p.hit.mean() > 0.3
    assert np.abs(img.astype(int) - (depth_image(p.depth) * 255 + 0.5).astype(np.uint8)).max() <= 1
    img, _ = render_look(lambda fn: fn(m), LookRequest(T, math.radians(60), 4 / 3, 36, "normals"))
    np.testing.assert_array_equal(img[~p.hit], 0)
    assert np.abs(img[p.hit] / 255.0 - 0.5 * (p.normals[p.hit] + 1)).max() < 0.01

    # the first pass of a preview (every second pixel) in bands is the preview at scale 2
    img, info = render_look(lambda fn: fn(m), LookRequest(T, math.radians(60), 4 / 3, 36, "depth", scale=2))
    p2 = preview(m, T, camera_K(req.fov_rad, 48, 36), 36, 48, scale=2)
    assert info["scale"] == 2 and info["bands"] == 1
    assert np.abs(img.astype(int) - (depth_image(p2.depth) * 255 + 0.5).astype(np.uint8)).max() <= 1


class SphereOnFloorDensity(SphereOnFloor):
    """The same scene as a density field (NeRF kind): dense inside, empty outside, a 1 cm soft edge."""

    kind = "nerf"

    def forward(self, x, dirs=None):
        out = super().forward(x)
        out.value = 500.0 * torch.sigmoid(-out.value / 0.01)
        out.color = None if dirs is None else self.color(out.geo, dirs)
        return out


def test_nerf_preview_samples_the_first_candidate_run_and_finds_the_surface():
    m = analytic_map()
    m.field = SphereOnFloorDensity()
    T = look_at_T_WC(np.array([1.4, -1.8, 1.2]), CENTER)
    H, W = 48, 64
    K = intrinsics(45.0, 45.0, (W - 1) / 2, (H - 1) / 2)
    z, n, on_sphere = analytic_depth(T, K, H, W)
    p = preview(m, T, K, H, W, nerf_samples=32)
    sphere = on_sphere & (z > 0)
    from scipy.ndimage import binary_erosion

    inner = binary_erosion(sphere, iterations=2)  # the sphere's pixels away from its outline
    assert inner.sum() > 50 and p.hit[inner].mean() > 0.95
    err = np.abs(p.depth - z)[inner & p.hit]
    assert np.median(err) < 0.04, np.median(err)  # within about one sample spacing (no importance pass)
    cos = (p.normals * n).sum(-1)[inner & p.hit]
    assert np.median(cos) > 0.95
    np.testing.assert_allclose(np.median(p.color[inner & p.hit], 0), [0.9, 0.1, 0.1], atol=0.05)
    assert p.stats["samples"] <= H * W * 32 + p.hit.sum()
