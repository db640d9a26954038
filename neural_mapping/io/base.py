"""The one small interface every frame source implements, and shared file helpers."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Iterator

import numpy as np

from neural_mapping.errors import InputError
from neural_mapping.frame import Frame, FrameError

log = logging.getLogger("neural_mapping.io")


class FrameSource:
    """An iterable of Frames in time order.

    Attributes: ``name`` (the input path as given), ``fmt`` ('3dmatch'|'replica'|'tum'|'bag'),
    ``skipped`` (frames that could not be read during the last iteration; each was
    logged as a warning). ``len(src)`` is the number of frames the source lists
    (frames yielded = len - skipped).
    """

    fmt: str = ""

    def __init__(self, name: str):
        self.name = str(name)
        self.skipped = 0
        self.skip_reasons: list[str] = []

    def __iter__(self) -> Iterator[Frame]:
        self.skipped = 0
        self.skip_reasons = []
        yield from self._frames()

    def _frames(self) -> Iterator[Frame]:  # pragma: no cover - interface
        raise NotImplementedError

    def __len__(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def _skip(self, what: str, why: str) -> None:
        self.skipped += 1
        msg = f"{what}: {why}; frame skipped"
        self.skip_reasons.append(msg)
        log.warning(msg)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, fmt={self.fmt!r})"


@dataclass
class FrameRecord:
    """Where one frame of an indexed dataset lives (files are read at iteration)."""

    color: Path
    depth: Path
    stamp_ns: int
    T_WC: np.ndarray | None = None  # (4, 4); None when it is read from ``pose_file``
    pose_file: Path | None = None


class IndexedSource(FrameSource):
    """A dataset whose frames are listed up front (3DMatch, Replica, TUM)."""

    def __init__(self, name: str, fmt: str, records: list[FrameRecord], K: np.ndarray, depth_scale: float,
                 invalid_depth: tuple[int, ...] = (0,), listing_skips: list[tuple[str, str]] = ()):
        super().__init__(name)
        #: (frame, why) of frames the dataset lists but cannot give (e.g. no pose): counted as skipped
        self.listing_skips = list(listing_skips)
        self.fmt = fmt
        self.records = records
        self.K = np.asarray(K, dtype=np.float64)
        self.depth_scale = float(depth_scale)  # raw depth value per metre
        self.invalid_depth = invalid_depth

    def __len__(self) -> int:
        return len(self.records) + len(self.listing_skips)

    def _frames(self) -> Iterator[Frame]:
        for what, why in self.listing_skips:
            self._skip(what, why)
        for r in self.records:
            try:
                rgb = read_rgb(r.color)
                raw = read_depth_png(r.depth)
                T = r.T_WC if r.T_WC is not None else read_matrix(r.pose_file, (4, 4))
                depth = raw.astype(np.float32) / np.float32(self.depth_scale)
                for bad in self.invalid_depth:
                    depth[raw == bad] = 0.0
                if rgb.shape[:2] != depth.shape:
                    raise FrameError(f"color {r.color.name} is {rgb.shape[1]}x{rgb.shape[0]} but depth "
                                     f"{r.depth.name} is {depth.shape[1]}x{depth.shape[0]}")
                yield Frame(rgb=rgb, depth_m=depth, K=self.K.copy(), T_WC=T, stamp_ns=r.stamp_ns)
            except (OSError, ValueError, InputError) as e:  # FrameError is a ValueError
                self._skip(str(r.color.parent / r.color.stem), str(e))


# ----------------------------------------------------------------------------- file helpers


def read_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 from a PNG/JPG (grey or RGBA converted). OSError/ValueError when unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode != "RGB":
                im = im.convert("RGB")
            return np.asarray(im, dtype=np.uint8).copy()
    except UnidentifiedImageError as e:
        raise ValueError(f"{path}: not a readable image ({e})") from None
    except OSError as e:
        raise OSError(f"{path}: cannot read image ({e})") from None


def read_depth_png(path: Path) -> np.ndarray:
    """(H, W) uint16 raw values of a 16-bit depth PNG."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("I;16", "I;16B", "I;16L", "I"):  # 8-bit ("L") has no room for millimetres
                bits = " (8-bit)" if im.mode in ("L", "P", "1") else ""
                raise ValueError(f"{path}: depth must be a 16-bit single-channel PNG, got mode {im.mode}{bits}")
            a = np.asarray(im)
    except UnidentifiedImageError as e:
        raise ValueError(f"{path}: not a readable image ({e})") from None
    except OSError as e:
        raise OSError(f"{path}: cannot read depth image ({e})") from None
    if a.ndim != 2:
        raise ValueError(f"{path}: depth must be single-channel, got shape {a.shape}")
    return a.astype(np.uint16)


def write_depth_png(path: Path, depth_m: np.ndarray, scale: float) -> None:
    """Write metres as a 16-bit PNG of round(depth * scale); values that do not fit become 0 (invalid)."""
    from PIL import Image

    raw = np.round(np.asarray(depth_m, dtype=np.float64) * scale)
    raw[(raw > 65534) | ~np.isfinite(raw) | (raw < 0)] = 0
    Image.fromarray(raw.astype(np.uint16)).save(path)


def write_rgb(path: Path, rgb: np.ndarray, quality: int = 95) -> None:
    from PIL import Image

    im = Image.fromarray(np.asarray(rgb, dtype=np.uint8), "RGB")
    if path.suffix.lower() in (".jpg", ".jpeg"):
        im.save(path, quality=quality)
    else:
        im.save(path)


def read_matrix(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A whitespace-separated text matrix; ValueError naming the file when malformed."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise OSError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        vals = np.array([float(x) for x in text.split()], dtype=np.float64)
    except ValueError:
        raise ValueError(f"{path}: not a matrix of numbers") from None
    if vals.size != shape[0] * shape[1]:
        raise ValueError(f"{path}: expected {shape[0]}x{shape[1]} numbers, found {vals.size}")
    return vals.reshape(shape)


def parse_stamp_ns(text: str) -> int:
    """'1305031102.175304' (seconds, any number of decimals) -> integer ns, exactly."""
    try:
        return int((Decimal(text) * 1_000_000_000).to_integral_value())
    except InvalidOperation:
        raise ValueError(f"not a time stamp: {text!r}") from None


def format_stamp(stamp_ns: int) -> str:
    """Seconds with 6 decimals (TUM style), or 9 when the stamp has sub-microsecond digits."""
    s, ns = divmod(int(stamp_ns), 1_000_000_000)
    return f"{s}.{ns // 1000:06d}" if ns % 1000 == 0 else f"{s}.{ns:09d}"


def require_dir(path: Path, what: str = "dataset") -> Path:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or directory")
    if not p.is_dir():
        raise InputError(f"{p}: expected a {what} directory")
    return p
