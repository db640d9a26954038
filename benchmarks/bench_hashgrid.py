"""Hash-grid encoding throughput: pure-PyTorch reference vs the fused CPU kernel, same process.

Prints points/s for
  encode          encoding forward only (no autograd)
  encode+bwd      forward + table gradient (what a training step does to the encoding)
  eikonal         forward + grad_x (create_graph) + backward to the table (training with eikonal)
  query sdf       full field (encoding + MLP trunk of the cpu preset), no gradient
  query sdf+grad  full field, sdf and its gradient w.r.t. position, as Mapper.query computes it
                  (fast path: inside hashgrid_ext.no_table_grad(), so no table gradient)
  query jacobian  full field via encode_with_jacobian + trunk autograd on the features only
and the ratio fast / reference; then, both with the kernel, what Mapper.query does now against
what it did before (the ratio is analytic / autograd):
  value           fastquery.value (cache-sized blocks, value output only) vs field(x) per chunk
  value+grad      fastquery.value_and_gradient (no autograd: forward keeping activation
                  derivatives, vjp of the value output only, jacobian from the kernel) vs autograd
                  inside no_table_grad()
  +geo            the same with the geometry features (what colour queries need) Points are uniform in a 5 x 4 x 2.6 m room ("random") or a
2 cm grid block of the same size ("grid", coherent like meshing). Each figure is the best of
--repeats timed runs (this machine may be shared: best-of is the least disturbed), as wall-clock
points/s and as points per CPU core-second (process CPU time, all threads).

Usage: .venv/bin/python benchmarks/bench_hashgrid.py [--n 262144] [--chunk 65536] [--repeats 3] [--threads T]
                                                     [--analytic-only]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from neural_mapping import fastquery as fq
from neural_mapping import hashgrid_ext as hx
from neural_mapping.config import preset
from neural_mapping.fields import build_field


def best_time(fn, repeats: int) -> tuple[float, float]:
    """(best wall seconds, best process CPU seconds) over ``repeats`` runs after a warm-up.

    CPU seconds (all threads) are less disturbed by other processes on a shared machine:
    N / cpu_s is points per core-second, and threads x that is what an idle machine would give
    with perfect scaling.
    """
    fn()  # warm-up
    walls, cpus = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return min(walls), min(cpus)


def room_points(n: int, kind: str, seed: int = 0) -> torch.Tensor:
    size = torch.tensor([5.0, 4.0, 2.6])
    if kind == "random":
        g = torch.Generator().manual_seed(seed)
        return torch.rand(n, 3, generator=g) * size
    # coherent: consecutive points of a 2 cm grid, x fastest (a meshing block), n points
    side = int(round(n ** (1 / 3))) + 1
    ax = torch.arange(side, dtype=torch.float32) * 0.02 + 1.0
    z, y, x = torch.meshgrid(ax, ax, ax, indexing="ij")
    return torch.stack([x, y, z], -1).reshape(-1, 3)[:n].contiguous()


def sdf_and_grad(field, p):
    p = p.clone().requires_grad_(True)
    with torch.enable_grad():
        v = field(p).value
        (g,) = torch.autograd.grad(v.sum(), p)
    return v.detach(), g


def sdf_and_grad_jacobian(field, p):
    """Jacobian route: features + d features / dx from the kernel, autograd through the trunk only."""
    enc = field.encoding
    feat, J = enc.encode_with_jacobian(p)  # (N, L*F), (N, L*F, 3)
    xyz = p * field.xyz_scale
    with torch.enable_grad():
        feat.requires_grad_(True)
        xyz.requires_grad_(True)
        inp = torch.cat([feat, xyz], -1) if field.include_xyz else feat
        v = field.trunk(inp)[:, 0]
        gf, gxyz = torch.autograd.grad(v.sum(), [feat, xyz], allow_unused=True)
    g = torch.einsum("nk,nka->na", gf, J)
    if gxyz is not None:
        g = g + gxyz * field.xyz_scale
    return v.detach(), g


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=262144, help="points per measurement")
    ap.add_argument("--chunk", type=int, default=65536, help="points per call (Mapper.query's default chunk)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch/OpenMP threads (0: leave as is)")
    ap.add_argument("--analytic-only", action="store_true",
                    help="only the Mapper.query rows (analytic vs autograd, both with the kernel)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    ext = hx.load()
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, N = {a.n} in chunks of {a.chunk}, best of {a.repeats}")
    if ext is None:
        print(f"fused kernel unavailable ({hx.unavailable_reason()}): nothing to compare")
        return 1
    cfg = preset("cpu")
    torch.manual_seed(0)
    field = build_field(cfg).eval()
    enc = field.encoding
    with torch.no_grad():  # a table of trained-like magnitude (values do not change the work done)
        enc.table.uniform_(-0.1, 0.1)
    print(f"encoding: {enc.n_levels} levels x {enc.n_features} features, table 2^{cfg.encoding.hash_log2_table}"
          f" per level, finest {cfg.encoding.hash_finest_m} m; trunk {cfg.field.layers}x{cfg.field.hidden}")

    def set_fast(on: bool):
        enc.fast_cpu_kernel = on

    def encode_only(p):
        with torch.no_grad():
            enc(p)

    def encode_bwd(p):
        out = enc(p)
        torch.autograd.grad(out, enc.table, torch.ones_like(out))

    def eikonal(p):
        q = p.clone().requires_grad_(True)
        out = enc(q)
        (gx,) = torch.autograd.grad(out.sum(), q, create_graph=True)
        torch.autograd.grad(((gx.norm(dim=-1) - 1) ** 2).mean(), enc.table)

    def query_sdf(p):
        with torch.no_grad():
            field(p)

    def query_grad(p):
        sdf_and_grad(field, p)

    def query_grad_fast(p):
        with hx.no_table_grad():
            sdf_and_grad(field, p)

    def chunked(fn):  # as Mapper.query: chunks of --chunk points
        return lambda p: [fn(p[s:s + a.chunk]) for s in range(0, p.shape[0], a.chunk)]

    for kind in ("random", "grid"):
        p = room_points(a.n, kind)
        N = p.shape[0]
        for name, ref_fn, fast_fn in (
            ("encode", encode_only, encode_only),
            ("encode+bwd", encode_bwd, encode_bwd),
            ("eikonal", eikonal, eikonal),
            ("query sdf", query_sdf, query_sdf),
            ("query sdf+grad", query_grad, query_grad_fast),
            ("query jacobian", query_grad, lambda q: sdf_and_grad_jacobian(field, q)),
        ):
            if (name == "eikonal" and kind == "grid") or a.analytic_only:
                continue
            ref_fn, fast_fn = chunked(ref_fn), chunked(fast_fn)
            set_fast(False)
            w_ref, c_ref = best_time(lambda: ref_fn(p), a.repeats)
            set_fast(True)
            w_fast, c_fast = best_time(lambda: fast_fn(p), a.repeats)
            print(f"{kind:6s} {name:15s} wall: ref {N / w_ref / 1e3:6.0f}  fast {N / w_fast / 1e3:6.0f} k pts/s  x{w_ref / w_fast:5.1f}"
                  f"  | per core-second: ref {N / c_ref / 1e3:6.0f}  fast {N / c_fast / 1e3:6.0f} k  x{c_ref / c_fast:5.1f}",
                  flush=True)
        set_fast(True)
        for name, ref_fn, fast_fn in (
            ("value", query_sdf, lambda q: fq.value(field, q)),
            ("value+grad", query_grad_fast, lambda q: fq.value_and_gradient(field, q)),
            ("value+grad+geo", query_grad_fast, lambda q: fq.value_and_gradient(field, q, want_geo=True)),
        ):
            ref_fn, fast_fn = chunked(ref_fn), chunked(fast_fn)
            w_ref, c_ref = best_time(lambda: ref_fn(p), a.repeats)
            w_fast, c_fast = best_time(lambda: fast_fn(p), a.repeats)
            print(f"{kind:6s} {name:15s} wall: autograd {N / w_ref / 1e3:6.0f}  analytic {N / w_fast / 1e3:6.0f} k pts/s"
                  f"  x{w_ref / w_fast:5.1f}  | per core-second: autograd {N / c_ref / 1e3:6.0f}  analytic"
                  f" {N / c_fast / 1e3:6.0f} k  x{c_ref / c_fast:5.1f}", flush=True)
    # the sdf+grad routes agree (the benchmark measures real answers)
    p = room_points(4096, "random", seed=1)
    set_fast(False)
    v0, g0 = sdf_and_grad(field, p)
    set_fast(True)
    v1, g1 = sdf_and_grad_jacobian(field, p)
    with hx.no_table_grad():
        v2, g2 = sdf_and_grad(field, p)
    v3, g3, _ = fq.value_and_gradient(field, p)
    v4 = fq.value(field, p)
    print(f"check: max |sdf diff| {max((v - v0).abs().max().item() for v in (v1, v2, v3, v4)):.2e}, "
          f"max |grad diff| {max((g - g0).abs().max().item() for g in (g1, g2, g3)):.2e} "
          f"(|grad| up to {g0.abs().max().item():.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
