"""Output files of the command line: checked before the work, written whole or not at all.

- :func:`require_writable_dir` tries to create (and removes) a file in a directory before a long
  computation, so an unwritable or missing output fails in one line at the start, not after
  training. It writes for real because permission bits say nothing for root and a read-only
  mount or a path under a regular file fails only when written.
- :func:`atomic_output` writes through a temporary file in the target's directory that replaces
  the target only when everything was written; on any error (disk full, file-size limit,
  permission) the temporary file is removed, no 0-byte or partial file is left, and the error
  becomes one :class:`~neural_mapping.errors.InputError` line naming the file.
- :func:`write_mesh_verified` writes a mesh through Open3D the same way and reads the file back
  (Open3D reports success on a full disk with a file that has no triangles).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterator

from neural_mapping.errors import InputError


def _why(e: OSError) -> str:
    return e.strerror or str(e)


def require_writable_dir(path: str | Path, what: str = "output directory", create: bool = False) -> Path:
    """``path`` as a directory where files can be written (``create``: made with its parents
    first); InputError naming it and the reason otherwise."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InputError(f"{p}: {what} exists and is not a directory")
    if create:
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"{p}: cannot create the {what} ({_why(e)})") from None
    elif not p.is_dir():
        raise InputError(f"{p}: {what} does not exist")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=p)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise InputError(f"{p}: cannot write in the {what} ({_why(e)})") from None
    return p


@contextlib.contextmanager
def atomic_output(path: str | Path, suffix: str = ".tmp") -> Iterator:
    """A binary file object to write ``path``'s content to; the file appears only if the block
    finishes and the data reach the disk (InputError, no file left, otherwise)."""
    p = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=suffix, dir=p.parent if str(p.parent) else ".")
    except OSError as e:
        raise InputError(f"{p}: cannot write ({_why(e)})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise InputError(f"{p}: cannot write ({_why(e)}); nothing was written") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _c_stderr_muted() -> Iterator[None]:
    """Send file descriptor 2 (where C libraries print) to /dev/null for the block (the command
    line is one thread; its own one-line error comes after)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def write_mesh_verified(mesh, path: str | Path) -> None:
    """Write an Open3D mesh to ``path`` (.ply/.obj) via a temporary file that replaces it only
    when Open3D reported success and the file reads back with every triangle."""
    import open3d as o3d

    from neural_mapping.products import save_mesh

    p = Path(path)
    ext = p.suffix.lower()
    if ext not in (".ply", ".obj"):
        raise InputError(f"{p}: mesh output must end in .ply or .obj")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.stem}.", suffix=ext, dir=p.parent if str(p.parent) else ".")
        os.close(fd)
    except OSError as e:
        raise InputError(f"{p}: cannot write ({_why(e)})") from None
    try:
        try:
            with _c_stderr_muted():  # Open3D's PLY writer prints one line per failed field to fd 2
                save_mesh(mesh, tmp)
        except ValueError as e:
            raise InputError(f"{p}: cannot write the mesh ({e})") from None
        except OSError as e:
            raise InputError(f"{p}: cannot write ({_why(e)}); nothing was written") from None
        want = len(mesh.triangles)
        if want:
            with _c_stderr_muted():  # and its reader a line per missing one
                got = len(o3d.io.read_triangle_mesh(tmp).triangles)
            if got != want:
                raise InputError(f"{p}: the mesh file came out incomplete ({got} of {want} triangles; "
                                 "is the disk full?); nothing was written")
        try:
            os.replace(tmp, p)
        except OSError as e:
            raise InputError(f"{p}: cannot write ({_why(e)})") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise

