"""The ablation's report: the claims judged from the rows, ablation.json, ablation.md and the PNGs.

Each claim is a rule on the numbers, stated in the report beside its verdict (held / did not
hold / not measured); nothing is tuned until a claim holds. Pictures are drawn with PIL (no
matplotlib in the core): a held-out view per variant beside the frame, a horizontal slice of
each field's surface value (sdf in m, nerf ``0.5 - occupancy``) through the middle of its
bounds as a blue (inside) / white / red (outside) heat map, and the mirror room with both heads.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

COLUMNS = [("psnr_db", "PSNR dB", "{:.2f}"), ("depth_l1_cm", "depth L1 cm", "{:.2f}"), ("fscore_5cm", "F@5cm", "{:.3f}"),
           ("chamfer_cm", "Chamfer cm", "{:.2f}"), ("eikonal_err", "eikonal", "{:.3f}"),
           ("normal_err_deg", "normal deg", "{:.1f}"), ("laplacian", "Laplacian 1/m", "{:.3g}"),
           ("phantom_m2", "phantom m2", "{:.3f}"), ("train_s", "train s", "{:.1f}"), ("steps", "steps", "{}"),
           ("params", "params", "{:,}")]


def _get(rows: dict, name: str, key: str) -> float:
    r = rows.get(name)
    v = None if r is None else r.get(key)
    return math.nan if v is None else float(v)


def _ok(*xs) -> bool:
    return all(x is not None and math.isfinite(x) for x in xs)


def judge_claims(rows: list[dict]) -> list[dict]:
    """[{claim, rule, held (True / False / None = not measured), numbers}] from the rows."""
    R = {r["name"]: r for r in rows}
    out = []

    def claim(n, text, rule, held, numbers):
        out.append({"claim": n, "text": text, "rule": rule, "held": held, "numbers": numbers})

    for kind in ("sdf", "nerf"):
        relu, four = _get(R, f"{kind}/relu", "psnr_db"), _get(R, f"{kind}/fourier", "psnr_db")
        claim("1-2", f"Fourier PE recovers the high frequencies a ReLU MLP on raw coordinates cannot ({kind})",
              "Fourier held-out PSNR >= ReLU + 3 dB", (four >= relu + 3) if _ok(relu, four) else None,
              f"ReLU {relu:.2f} dB, Fourier {four:.2f} dB")
        gau = _get(R, f"{kind}/gaussian", "psnr_db")
        claim("3a", f"Gaussian random Fourier features work as well as sinusoids ({kind})",
              "Gaussian PSNR >= Fourier PSNR - 0.5 dB", (gau >= four - 0.5) if _ok(gau, four) else None,
              f"Gaussian {gau:.2f} dB, Fourier {four:.2f} dB")
    sp = {k: _get(R, "sdf/spline", k) for k in ("normal_err_deg", "laplacian", "fscore_5cm")}
    hg = {k: _get(R, "sdf/hashgrid", k) for k in ("normal_err_deg", "laplacian", "fscore_5cm")}
    ok = _ok(*sp.values(), *hg.values())
    claim("3b", "Spline encodings work for SDFs: smoother normals and second derivatives than the hash grid",
          "spline normal error and Laplacian < hash grid's, spline F@5cm >= 0.9",
          (sp["normal_err_deg"] < hg["normal_err_deg"] and sp["laplacian"] < hg["laplacian"] and sp["fscore_5cm"] >= 0.9)
          if ok else None,
          f"normal error spline {sp['normal_err_deg']:.1f} / hash {hg['normal_err_deg']:.1f} deg, Laplacian "
          f"{sp['laplacian']:.3g} / {hg['laplacian']:.3g} 1/m, F@5cm {sp['fscore_5cm']:.3f} / {hg['fscore_5cm']:.3f}")
    rz = R.get("sdf/relu", {}).get("extra", {}).get("laplacian_zero_fraction", math.nan)
    sz = R.get("sdf/siren", {}).get("extra", {}).get("laplacian_zero_fraction", math.nan)
    se, re_ = _get(R, "sdf/siren", "eikonal_err"), _get(R, "sdf/relu", "eikonal_err")
    claim("4", "SIREN's derivatives are usable; a ReLU MLP's second derivative is zero almost everywhere",
          "ReLU Laplacian zero at >= 90 % of surface points, SIREN's at <= 10 %",
          (rz >= 0.9 and sz <= 0.1) if _ok(rz, sz) else None,
          f"Laplacian = 0 at ReLU {100 * rz:.0f} % / SIREN {100 * sz:.0f} % of surface points; eikonal error "
          f"ReLU {re_:.3f}, SIREN {se:.3f}")
    d0, d1 = _get(R, "nerf/hashgrid-nodepth", "depth_l1_cm"), _get(R, "nerf/hashgrid", "depth_l1_cm")
    h0 = _get(R, "nerf/hashgrid-nodepth", "hit_ratio")
    claim("5", "A NeRF learns a volume, so it gives depth without depth supervision",
          "held-out depth L1 without depth loss < 15 cm and rendered surface on >= 50 % of pixels",
          (d0 < 15 and h0 >= 0.5) if _ok(d0, h0) else None,
          f"depth L1 without depth loss {d0:.2f} cm (surface on {100 * h0:.0f} % of pixels), with it {d1:.2f} cm")
    pp, pr = _get(R, "mirror/plain", "phantom_m2"), _get(R, "mirror/reflective", "phantom_m2")
    qp, qr = _get(R, "mirror/plain", "psnr_db"), _get(R, "mirror/reflective", "psnr_db")
    claim("6", "Reflections break a plain NeRF (phantom world behind a mirror); modelling reflection fixes it",
          "reflective phantom area <= 50 % of plain's and higher held-out PSNR",
          (pr <= 0.5 * pp and qr > qp) if _ok(pp, pr, qp, qr) else None,
          f"phantom area plain {pp:.3f} m2 / reflective {pr:.3f} m2, PSNR plain {qp:.2f} / reflective {qr:.2f} dB")
    return out


def _fmt(v, f) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f.format(v)


def markdown(rows: list[dict], claims: list[dict], meta: dict) -> str:
    lines = [f"# Ablation: {meta.get('input', '')}", "",
             f"{meta.get('frames', '?')} frames, held out every {meta.get('exclude_every')}th, "
             f"{meta.get('seconds')} s of training per variant after adding the frames, seed {meta.get('seed')}, "
             f"device {meta.get('device', 'cpu')}; GT mesh: {meta.get('gt_mesh') or 'none'}; variants run: "
             f"{meta.get('variants_done', 'all')}. "
             "n/a: does not apply (eikonal and Laplacian: SDF only) or needs a GT mesh.", "",
             "| variant | " + " | ".join(c[1] for c in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for r in rows:
        lines.append(f"| {r['name']} | " + " | ".join(_fmt(r.get(k), f) for k, _, f in COLUMNS) + " |")
    lines += ["", "## Claims", ""]
    for c in claims:
        verdict = {True: "**held**", False: "**did not hold**", None: "not measured"}[c["held"]]
        lines.append(f"- claim {c['claim']}: {c['text']}: {verdict} ({c['rule']}; {c['numbers']})")
    return "\n".join(lines) + "\n"


def write_report(out: Path, rows: list[dict], pictures: dict, meta: dict) -> dict[str, Path]:
    """DIR/ablation.json, DIR/ablation.md and the PNGs; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    claims = judge_claims(rows)
    paths = {"json": out / "ablation.json", "md": out / "ablation.md"}
    paths["json"].write_text(json.dumps({"meta": meta, "rows": rows, "claims": claims}, indent=2,
                                        default=lambda o: o.item() if hasattr(o, "item") else str(o)) + "\n")
    paths["md"].write_text(markdown(rows, claims, meta))
    main = {k: p for k, p in pictures.items() if not k.startswith("mirror/")}
    mirror = {k: p for k, p in pictures.items() if k.startswith("mirror/")}
    if main:
        paths["views"] = out / "views.png"
        _views(main).save(paths["views"])
        paths["slices"] = out / "slices.png"
        _slices(main).save(paths["slices"])
    if mirror:
        paths["mirror"] = out / "mirror.png"
        _views(mirror).save(paths["mirror"])
    return paths


# ----------------------------------------------------------------------------- pictures


def _u8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def _depth_rgb(d: np.ndarray, dmax: float) -> np.ndarray:
    g = np.where(d > 0, 1.0 - np.clip(d / max(dmax, 1e-6), 0, 1) * 0.85, 0.0)
    return np.repeat(g[..., None], 3, -1)


def _labelled(img: np.ndarray, text: str):
    from PIL import Image, ImageDraw

    h, w = img.shape[:2]
    canvas = Image.new("RGB", (w, h + 14), (255, 255, 255))
    canvas.paste(Image.fromarray(img), (0, 14))
    ImageDraw.Draw(canvas).text((2, 1), text, fill=(0, 0, 0))
    return canvas


def _grid(tiles: list, cols: int):
    from PIL import Image

    w = max(t.width for t in tiles)
    h = max(t.height for t in tiles)
    rows = (len(tiles) + cols - 1) // cols
    out = Image.new("RGB", (cols * w, rows * h), (255, 255, 255))
    for i, t in enumerate(tiles):
        out.paste(t, ((i % cols) * w, (i // cols) * h))
    return out


def _views(pictures: dict):
    """Row 1: the held-out frame and each variant's colour; row 2: their depths."""
    first = next((p for p in pictures.values() if p.gt_view is not None), None)
    if first is None:
        return _grid([_labelled(np.zeros((8, 8, 3), np.uint8), "no held-out view")], 1)
    dmax = float(first.gt_depth.max())
    names = list(pictures)
    colour = [_labelled(_u8(first.gt_view), "held-out frame")]
    depth = [_labelled(_u8(_depth_rgb(first.gt_depth, dmax)), "frame depth")]
    for n in names:
        p = pictures[n]
        blank = np.zeros_like(first.gt_view)
        colour.append(_labelled(_u8(p.view if p.view is not None else blank), n))
        depth.append(_labelled(_u8(_depth_rgb(p.view_depth, dmax) if p.view_depth is not None else blank), n + " depth"))
    return _grid(colour + depth, len(colour))


def _heat(v: np.ndarray, scale: float) -> np.ndarray:
    """Blue (negative) - white (0) - red (positive), saturating at +-scale; black zero crossing."""
    a = np.clip(v / scale, -1, 1)[..., None]
    img = np.where(a > 0, (1 - a) * np.ones(3) + a * np.array([0.8, 0.1, 0.1]),
                   (1 + a) * np.ones(3) - a * np.array([0.1, 0.2, 0.8]))
    edge = np.zeros(v.shape, bool)
    s = np.sign(v)
    edge[:-1] |= s[:-1] != s[1:]
    edge[:, :-1] |= s[:, :-1] != s[:, 1:]
    img[edge] = 0.0
    return img


def _slices(pictures: dict):
    tiles = []
    for n, p in pictures.items():
        if p.slice is None:
            continue
        scale = 0.3 if p.kind == "sdf" else 0.5
        tiles.append(_labelled(_u8(_heat(p.slice, scale)), n))
    if not tiles:
        tiles = [_labelled(np.zeros((8, 8, 3), np.uint8), "no slice")]
    return _grid(tiles, min(6, len(tiles)))
