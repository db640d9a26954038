"""Give the C heap's free pages back to the system after a product (glibc ``malloc_trim``).

A product (mesh, occupancy, voxels, esdf, render) allocates and frees hundreds of MB of numpy and
torch temporaries in the product thread. glibc keeps freed memory in the arena of the thread
that freed it (one arena per thread, up to 8 per core), and raises its mmap threshold after large
frees, so later large arrays come from the arenas too: the resident size then creeps up with the
arenas' free space, not with the map. ``malloc_trim(0)`` returns the free pages of every arena
(``madvise(MADV_DONTNEED)``); it costs milliseconds, once per product. Elsewhere than glibc (musl,
macOS) it is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


def trim() -> bool:
    """Return the heap's free pages to the system; True when glibc released any."""
    fn = _malloc_trim()
    return bool(fn(0)) if fn is not None else False
