"""The persistent compile cache: compiled programs kept on disk across runs, workers and hosts.

``protolab.backends._cache`` keeps compiled programs in one warm process (``watch``); this
module keeps what the *frameworks* write to disk, so a fresh process (another ``run``,
another ``--workers`` worker, another host sharing the folder) compiles an architecture it
has seen before warm: inductor's FX-graph and AOTAutograd caches (with its C++ kernels),
JAX's persistent compilation cache, TensorFlow's XLA persistent cache.

Where: ``$PROTOLAB_COMPILE_CACHE`` (a folder, or ``off``), which the CLI sets from the
config's ``hardware.compile_cache`` (default: ``compile_cache/`` beside the MLflow SQLite
store, i.e. ``mlruns/compile_cache``) so a backend's worker process inherits it.

Why a hit is always correct: each framework keys its own entries by the program (graph,
shapes, dtypes, options) and the compiler's inputs; protolab adds one folder per framework
version and device (``torch-2.13.0-cpu-<cpu>``), so another version or device never even
looks at an entry it did not write.

How a run knows hit or miss (tag ``protolab.compile_cache``): no framework has a public
hit counter, so the cache folder is compared before and after the run's compile window. A
miss always writes new entries; a hit writes none. So: new entries -> ``miss``, none ->
``hit``, cache not used -> ``off``. A miss is never reported as a hit; the converse can
happen when another process writes into the same folder during this compile (a concurrent
worker compiling something else), and then the run says ``miss``.

Hosts that share only a tracking server: ``hardware.compile_cache_sync: true`` carries a
miss's new entries as artifacts of one MLflow run per cache key and downloads them before
a compile (``_cache_sync``; only with ``--trust``: the entries hold code that runs here).

Size: an LRU cap (``hardware.compile_cache_max_mb``, ``$PROTOLAB_COMPILE_CACHE_MAX`` bytes)
applied after each run: the least recently used files (by the later of atime and mtime) go
first. Every framework treats a missing file as a miss and recompiles, so eviction is safe.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path

from protolab._stores import check_store_path, default_tracking_uri, redact
from protolab.backends._cache_sync import SYNC_ENV, pull, push
from protolab.backends._env import package_versions
from protolab.backends._peak import cpu_name
from protolab.errors import ConfigError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "ENV",
    "MAX_ENV",
    "OFF",
    "FolderUsage",
    "Probe",
    "clear",
    "clear_compile_cache",
    "compile_cache_root",
    "compile_cache_usage",
    "configure",
    "configure_compile_cache",
    "default_root",
    "folder",
    "holds",
    "host_device",
    "key_digest",
    "max_bytes",
    "parse_size",
    "root",
    "tf_flag_set",
    "tf_folder",
    "trim",
    "trim_compile_cache",
    "trusted",
    "usage",
]

ENV = "PROTOLAB_COMPILE_CACHE"
MAX_ENV = "PROTOLAB_COMPILE_CACHE_MAX"
OFF = "off"
DEFAULT_MAX_BYTES = 2 * 2**30
_NAME = "compile_cache"
_COLD = "protolab-cold"  # per framework folder: the cold compile seconds per job key
_NOT_ENTRIES = frozenset({"locks", _COLD})  # inductor's lock files; protolab's own records
_TF_FLAG = "--tf_xla_persistent_cache_directory"
_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def default_root(tracking_uri: str | None = None) -> Path:
    """``compile_cache/`` beside a local MLflow store, else ``./mlruns/compile_cache``."""
    uri = tracking_uri or default_tracking_uri()
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).resolve().parent / _NAME
    if uri.startswith("file:"):
        return Path(uri.removeprefix("file://")).resolve() / _NAME
    return (Path.cwd() / "mlruns" / _NAME).resolve()


def parse_size(text: str, field: str) -> int:
    """``2GiB``, ``500MB``, ``1.5g`` or a byte count -> bytes (binary units throughout)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if m is None or float(m.group(1)) <= 0:
        raise ConfigError(
            f"{field}: {text!r} is not a size; allowed: a positive number of bytes or "
            "one with a unit, e.g. 500MB, 2GiB"
        )
    return int(float(m.group(1)) * _UNITS[m.group(2)])


TRUST_ENV = "PROTOLAB_TRUST"


def trusted() -> bool:
    """``PROTOLAB_TRUST`` says the user trusts the stores it reads (as ``--trust`` does)."""
    return os.environ.get(TRUST_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def configure(
    setting: str | None,
    max_mb: int | None,
    tracking_uri: str | None,
    sync: bool = False,
    trust: bool = False,
) -> Path | None:
    """Resolve ``hardware.compile_cache`` into the environment every backend reads.

    ``None`` keeps ``$PROTOLAB_COMPILE_CACHE`` if set, else the default beside the tracking
    store; ``off`` disables it; anything else is a folder (relative to the working dir).
    A folder that cannot be one is refused here (exit 2), before any store is written;
    so is ``sync`` (``hardware.compile_cache_sync``) without ``trust`` or without a cache.
    """
    value = setting if setting is not None else os.environ.get(ENV)
    field = "hardware.compile_cache" if setting is not None else f"${ENV}"
    off = value is not None and value.strip().lower() == OFF
    _configure_sync(sync, trust or trusted(), off, tracking_uri)
    if off:
        os.environ[ENV] = OFF
        _set_tf_flag(None)
        return None
    if value:
        path = Path(value).expanduser().resolve()
    else:
        path, field = default_root(tracking_uri), "hardware.compile_cache (default)"
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{field}: {path} is a file; allowed: a folder, or off")
    check_store_path(path, field, kind="dir")
    os.environ[ENV] = str(path)
    if max_mb is not None:
        os.environ[MAX_ENV] = str(max_mb * 2**20)
    _set_tf_flag(tf_folder())
    return path


def _configure_sync(sync: bool, trust: bool, off: bool, tracking_uri: str | None) -> None:
    """``$PROTOLAB_COMPILE_CACHE_SYNC`` (what turns syncing on in a backend), set only when
    the user trusts the store: downloaded entries are code this host runs."""
    os.environ.pop(SYNC_ENV, None)
    if not sync:
        return
    if off:
        raise ConfigError(
            "hardware.compile_cache_sync: true carries the compile cache through the tracking "
            "store, but hardware.compile_cache is off; allowed: a cache folder, or "
            "compile_cache_sync: false"
        )
    uri = tracking_uri or default_tracking_uri()
    if not trust:
        raise ConfigError(
            f"hardware.compile_cache_sync: true downloads compiled programs (Python source, "
            f"shared libraries) from the tracking store {redact(uri)} and runs them here; "
            "allowed only with --trust (or PROTOLAB_TRUST=1) if you trust everyone who can "
            "write to that store, else set hardware.compile_cache_sync: false"
        )
    os.environ[SYNC_ENV] = uri  # a backend's own process (the JAX worker) inherits it


def _set_tf_flag(path: Path | None) -> None:
    """TensorFlow reads ``TF_XLA_FLAGS`` once, at its process's first XLA compile: the
    folder goes in now, before any framework is imported (a user's own folder is replaced,
    and removed when the cache is off, so TensorFlow never reads a cache protolab does not
    watch)."""
    kept = [f for f in os.environ.get("TF_XLA_FLAGS", "").split() if not f.startswith(_TF_FLAG)]
    if path is not None:
        kept.append(f"{_TF_FLAG}={path}")
    if kept:
        os.environ["TF_XLA_FLAGS"] = " ".join(kept)
    else:
        os.environ.pop("TF_XLA_FLAGS", None)


def tf_folder() -> Path | None:
    """TensorFlow's folder. Its XLA cache keys entries by the function's signature and the
    device type only (no TF version, no device model), so both are in the folder's name."""
    version = package_versions().get("tensorflow")
    return folder("tensorflow", version, host_device()) if version else None


def host_device() -> str:
    """``cpu-<model>``, plus the NVIDIA GPUs' models when the driver lists them (read from
    ``/proc``, so naming a folder imports no framework)."""
    gpus: list[str] = []
    for info in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
        with contextlib.suppress(OSError):
            for line in info.read_text().splitlines():
                if line.startswith("Model:"):
                    gpus.append(line.split(":", 1)[1].strip())
    return "-".join([f"cpu-{cpu_name()}", *gpus])


def tf_flag_set() -> bool:
    """Whether ``TF_XLA_FLAGS`` names TensorFlow's folder of the cache (see :func:`configure`)."""
    path = tf_folder()
    return path is not None and f"{_TF_FLAG}={path}" in os.environ.get("TF_XLA_FLAGS", "").split()


def root() -> Path | None:
    """The cache folder a backend uses (``None``: off)."""
    value = os.environ.get(ENV)
    if value is not None and value.strip().lower() == OFF:
        return None
    return Path(value).expanduser().resolve() if value else default_root()


def max_bytes() -> int:
    try:
        return max(int(os.environ.get(MAX_ENV, "") or DEFAULT_MAX_BYTES), 1)
    except ValueError:
        return DEFAULT_MAX_BYTES


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+_-]+", "_", text).strip("_")[:80]


def folder(framework: str, version: str, device: str) -> Path | None:
    """This framework version's and device's own folder (``None``: the cache is off)."""
    base = root()
    if base is None:
        return None
    return base / _slug(f"{framework}-{version}-{device}")


def key_digest(key: tuple[Hashable, ...]) -> str:
    """A stable name for a job key (plain values: its repr is the same in every process)."""
    return hashlib.sha256(repr(key).encode()).hexdigest()[:32]


def holds(path: Path | None, key: tuple[Hashable, ...]) -> bool:
    """Whether the folder holds this job key's compile (a miss recorded it): the next
    compile of it is warm (the calibration may then afford a slow-compiling mode)."""
    return path is not None and (path / _COLD / key_digest(key)).is_file()


def _entries(path: Path) -> set[str]:
    """Every cache file under ``path`` (relative names), locks and protolab's records aside."""
    out: set[str] = set()
    for dirpath, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if d not in _NOT_ENTRIES]
        rel = os.path.relpath(dirpath, path)
        out.update(f for f in (os.path.join(rel, f) for f in files) if ".tmp" not in f)
    return out


class Probe:
    """One run's view of a cache folder: entries before its compile, then hit or miss.

    ``path`` is None when the cache is off. A framework whose on-disk cache is always on
    (inductor: ``/tmp/torchinductor_$USER`` by default) then compiles into a throwaway
    folder (``scratch=True``, deleted at :meth:`finish`), so ``off`` is always a cold
    compile, never one served by the framework's default cache in secret.

    ``programs``: the name prefixes of the model's own programs' entries, for a framework
    that also caches every small eager op (JAX: a weight initializer, a numpy array staged
    onto the device), so a warm model compile beside one new trivial op still says hit
    (every entry written is still kept, and carried when synced).
    """

    def __init__(
        self,
        path: Path | None,
        scratch: bool = False,
        key: tuple[Hashable, ...] | None = None,
        programs: tuple[str, ...] = (),
    ) -> None:
        self.path, self.key, self.programs = path, key, programs
        self.scratch: Path | None = None
        if path is None and scratch:
            self.scratch = Path(tempfile.mkdtemp(prefix="protolab-compile-off-"))
            atexit.register(shutil.rmtree, self.scratch, True)  # a run that fails, too
        elif path is not None:
            path.mkdir(parents=True, exist_ok=True)
            if key is not None:  # the tracking store's entries first (compile_cache_sync)
                pull(path, key_digest(key))
        self.before = _entries(path) if path is not None else set()
        self.written: set[str] = set()
        self.state = OFF if path is None else ""
        self.window_s: float | None = None

    @property
    def where(self) -> Path | None:
        """The folder the framework compiles into: the cache, the throwaway one, or none."""
        return self.path if self.path is not None else self.scratch

    def after_compile(self, first_s: float | None, step_s: list[float]) -> str:
        """The compile window ended: keep its length (the first step's extra time over a
        typical step, or a compile's own time) and decide hit or miss."""
        if first_s is not None and self.window_s is None:
            typical = sorted(step_s)[len(step_s) // 2] if step_s else 0.0
            self.window_s = max(first_s - typical, 0.0)
        return self.close()

    def close(self) -> str:
        """``miss`` if the compile wrote entries, else ``hit``; ``off`` without a cache."""
        if self.path is not None and not self.state:
            self.written = _entries(self.path) - self.before
            ours = [
                f
                for f in self.written
                if not self.programs or os.path.basename(f).startswith(self.programs)
            ]
            self.state = "miss" if ours else "hit"
        return self.state or OFF

    def finish(self, key: tuple[Hashable, ...] | None = None) -> dict[str, float]:
        """The run's end: the cold compile beside a hit, the cold record of a miss (and its
        entries to the tracking store, when synced), the cap.

        Returns ``time/compile_cold_s`` for a hit whose architecture missed here before.
        """
        state = self.close()
        out: dict[str, float] = {}
        key = key if key is not None else self.key
        if self.path is None or key is None:
            if self.scratch is not None:
                shutil.rmtree(self.scratch, ignore_errors=True)
            return out
        record = self.path / _COLD / key_digest(key)
        if state == "miss":
            if self.window_s is not None:
                record.parent.mkdir(exist_ok=True)
                tmp = record.with_suffix(f".{os.getpid()}.part")
                tmp.write_text(f"{self.window_s:.6f}\n")
                os.replace(tmp, record)
            push(self.path, key_digest(key), [*self.written, f"{_COLD}/{record.name}"])
        elif state == "hit":
            with contextlib.suppress(OSError, ValueError):
                out["time/compile_cold_s"] = float(record.read_text())
        base = self.path.parent
        trim(base, max_bytes())
        return out


@dataclass(frozen=True)
class FolderUsage:
    """One framework folder of the cache: what ``protolab cache`` lists."""

    name: str
    entries: int
    bytes: int


def usage(base: Path) -> list[FolderUsage]:
    """Entries and bytes per framework folder (``torch-<version>-<device>`` ...)."""
    out: list[FolderUsage] = []
    if not base.is_dir():
        return out
    for sub in sorted(p for p in base.iterdir() if p.is_dir()):
        files = _entries(sub)
        size = sum(_size(sub / f) for f in files)
        out.append(FolderUsage(sub.name, len(files), size))
    return out


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _stamp(path: Path) -> float:
    try:
        st = path.stat()
    except OSError:
        return time.time()
    return max(st.st_atime, st.st_mtime)


def trim(base: Path, limit: int) -> int:
    """Delete least-recently-used files until ``base`` holds at most ``limit`` bytes.

    Returns the number of files deleted. Empty folders left behind are removed too.
    """
    files = [sub / f for sub in _folders(base) for f in _entries(sub)]
    sizes = {f: _size(f) for f in files}
    total = sum(sizes.values())
    if total <= limit:
        return 0
    removed = 0
    for f in sorted(files, key=_stamp):
        if total <= limit:
            break
        try:
            f.unlink()
        except OSError:
            continue
        total -= sizes[f]
        removed += 1
    for sub in _folders(base):
        _prune_empty(sub)
    return removed


def _folders(base: Path) -> list[Path]:
    return sorted(p for p in base.iterdir() if p.is_dir()) if base.is_dir() else []


def _prune_empty(path: Path) -> None:
    for dirpath, _dirs, _files in sorted(os.walk(path), key=lambda t: -len(t[0])):
        if Path(dirpath) != path:
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)  # only succeeds when empty


def clear(base: Path) -> int:
    """Delete every framework folder under ``base``; returns how many files went."""
    count = sum(u.entries for u in usage(base))
    for sub in _folders(base):
        shutil.rmtree(sub, ignore_errors=True)
    return count


# What the CLI and commands use, through ``protolab.backends`` (named for that namespace).
configure_compile_cache = configure
compile_cache_root = root
compile_cache_usage = usage
clear_compile_cache = clear
trim_compile_cache = trim
