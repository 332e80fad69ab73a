"""``protolab cache``: the persistent compile cache, shown, trimmed or cleared.

The cache is what makes a second run of an architecture compile warm (tag
``protolab.compile_cache``); it grows by one set of programs per new architecture, shape
and framework version, so it is bounded by an LRU cap after every run
(``hardware.compile_cache_max_mb``), and here by hand (``--max-size``, ``--clear``).
"""

from __future__ import annotations

from pathlib import Path

from protolab.backends import (
    clear_compile_cache,
    compile_cache_root,
    compile_cache_usage,
    parse_size,
    trim_compile_cache,
)
from protolab.errors import StorageError

__all__ = ["show_cache"]


def _size(n: int) -> str:
    """Bytes in binary units, three digits: what ``--max-size`` accepts back."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} B"


def show_cache(folder: Path | None, clear: bool, max_size: str | None) -> None:
    """Print the cache's folder, then its framework folders (entries, size) and the total.

    ``clear`` deletes every entry first; ``max_size`` trims the least recently used
    entries down to that size first. Bad input (a size, a file as ``--dir``) is refused
    before anything is deleted.
    """
    limit = parse_size(max_size, "--max-size") if max_size is not None else None
    if folder is not None and folder.exists() and not folder.is_dir():
        raise StorageError(f"--dir: {folder} is a file; allowed: a folder (the compile cache)")
    base = folder.expanduser().resolve() if folder is not None else compile_cache_root()
    if base is None:
        print("compile cache: off ($PROTOLAB_COMPILE_CACHE=off); --dir names a folder to show")
        return
    if clear:
        print(f"cleared {clear_compile_cache(base)} files")
    if limit is not None:
        print(f"trimmed {trim_compile_cache(base, limit)} files (cap {_size(limit)})")
    rows = compile_cache_usage(base)
    print(f"compile cache: {base}{'' if base.is_dir() else ' (not created yet)'}")
    for row in rows:
        print(f"  {row.name:<64} {row.entries:>6} entries  {_size(row.bytes):>10}")
    total = sum(r.bytes for r in rows)
    print(f"  total: {sum(r.entries for r in rows)} entries, {_size(total)}")
