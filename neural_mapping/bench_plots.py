"""PNG figures of `neural-mapping bench`, drawn with Pillow only (no matplotlib in the project).

- ``curve.png``: our error metric against training time, the TSDF rows' values as horizontal lines;
- ``views.png``: three held-out views, one row each: the real image, our render, our depth error
  and each TSDF's depth error as heat maps (0 - 10 cm, black: no depth);
- ``occupancy.png``: our top-down 2D occupancy (0.2 - 1.8 m band): occupied black, free white,
  unknown grey.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

_COLORS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14)]


def heat(err_m: np.ndarray, vmax_m: float = 0.10) -> np.ndarray:
    """(H, W) errors (m, nan = none) -> (H, W, 3) uint8: blue (0) - green - yellow - red (vmax), black nan."""
    x = np.clip(np.nan_to_num(err_m, nan=0.0) / vmax_m, 0, 1)
    stops = np.array([[0, 0, 160], [0, 170, 255], [0, 200, 80], [255, 220, 0], [220, 0, 0]], np.float64)
    pos = x * (len(stops) - 1)
    i = np.minimum(pos.astype(int), len(stops) - 2)
    w = (pos - i)[..., None]
    rgb = (1 - w) * stops[i] + w * stops[i + 1]
    rgb[~np.isfinite(err_m)] = 0
    return rgb.astype(np.uint8)


def _line_plot(path: Path, series: dict, levels: dict, ylabel: str, size=(640, 420)) -> None:
    from PIL import Image, ImageDraw

    W, H = size
    L, R, T, B = 60, 170, 20, 40
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    xs = [x for pts in series.values() for x, _ in pts] or [0, 1]
    ys = [y for pts in series.values() for _, y in pts if np.isfinite(y)] + [v for v in levels.values() if np.isfinite(v)]
    x0, x1 = 0.0, max(xs) * 1.05 or 1.0
    y0, y1 = 0.0, (max(ys) * 1.1 if ys else 1.0) or 1.0

    def px(x, y):
        return L + (x - x0) / (x1 - x0) * (W - L - R), H - B - (y - y0) / (y1 - y0) * (H - T - B)

    d.rectangle([L, T, W - R, H - B], outline="black")
    for k in range(6):
        y = y0 + k * (y1 - y0) / 5
        d.text((5, px(0, y)[1] - 6), f"{y:.2f}", fill="black")
        x = x0 + k * (x1 - x0) / 5
        d.text((px(x, 0)[0] - 10, H - B + 5), f"{x:.0f}", fill="black")
    d.text((L, H - 15), "training time (s)", fill="black")
    d.text((L + 5, 2), ylabel, fill="black")
    row = T
    for c, (name, pts) in enumerate(series.items()):
        col = _COLORS[c % len(_COLORS)]
        p = [px(x, y) for x, y in pts if np.isfinite(y)]
        if len(p) > 1:
            d.line(p, fill=col, width=2)
        for q in p:
            d.ellipse([q[0] - 3, q[1] - 3, q[0] + 3, q[1] + 3], fill=col)
        d.text((W - R + 8, row), name, fill=col)
        row += 15
    for c, (name, v) in enumerate(levels.items(), start=len(series)):
        if not np.isfinite(v):
            continue
        col = _COLORS[c % len(_COLORS)]
        y = px(0, v)[1]
        for xa in range(L, W - R, 12):  # dashed
            d.line([(xa, y), (min(xa + 6, W - R), y)], fill=col, width=2)
        d.text((W - R + 8, row), f"{name} {v:.2f}", fill=col)
        row += 15
    img.save(path)


def _views(path: Path, mapper, held, err_images: dict) -> None:
    from PIL import Image, ImageDraw

    from neural_mapping.camera import stride_intrinsics
    from neural_mapping.runner import eval_stride

    n = len(held)
    picks = sorted({0, n // 2, n - 1}) if n else []
    rows = []
    colours = err_images.get("_our_colour")  # our renders of the held-out views, if the bench kept them
    errs = {k: v for k, v in err_images.items() if not k.startswith("_")}
    labels = ["real image", "our render"] + [f"{k} depth error" for k in errs]
    for j in picks:
        _, f = held[j]
        s = eval_stride(f)
        col = colours[j] if colours else mapper.render(f.T_WC, stride_intrinsics(f.K, s),
                                                       *f.depth_m[::s, ::s].shape).color
        tiles = [f.rgb[::s, ::s], (np.clip(col, 0, 1) * 255).astype(np.uint8)]
        tiles += [heat(errs[k][j]) for k in errs]
        rows.append(np.concatenate(tiles, 1))
    if not rows:
        return
    h, w = rows[0].shape[0], rows[0].shape[1] // len(labels)
    img = Image.fromarray(np.concatenate(rows, 0))
    scale = max(1, 320 // w)
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    canvas = Image.new("RGB", (img.width, img.height + 16), "white")
    canvas.paste(img, (0, 16))
    d = ImageDraw.Draw(canvas)
    for i, lab in enumerate(labels):
        d.text((i * w * scale + 4, 2), lab, fill="black")
    canvas.save(path)


def _occupancy(path: Path, mapper) -> None:
    from PIL import Image

    from neural_mapping.products import FREE_CELL, OCCUPIED_CELL, occupancy_slice_2d

    sl = occupancy_slice_2d(mapper, 0.2, 1.8, 0.05)
    img = np.full(sl.data.shape, 128, np.uint8)
    img[sl.data == FREE_CELL] = 255
    img[sl.data == OCCUPIED_CELL] = 0
    im = Image.fromarray(img[::-1])  # row 0 at min y: flip so +y is up
    im.resize((im.width * 4, im.height * 4), Image.NEAREST).save(path)


def write_plots(out: Path, result: dict, mapper, held, err_images: dict) -> list[str]:
    """Write the PNGs (see the module doc) into ``out``; returns their file names."""
    c = result["curve"]
    names = ["curve.png", "occupancy.png"]
    _line_plot(out / "curve.png", {"ours": c["ours"]}, c["tsdf_levels"], c["metric"])
    _occupancy(out / "occupancy.png", mapper)
    if held:
        _views(out / "views.png", mapper, held, err_images)
        names.append("views.png")
    return names
