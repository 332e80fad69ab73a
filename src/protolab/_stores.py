"""Store URLs in one place: which schemes are allowed, where local stores live, how a URL
is shown (passwords redacted), checked (read-only, before anything is written) and opened.

Two stores serve a study: Optuna's (``study.storage``: a journal file under ``mlruns/`` by
default, an RDB / Redis URL, or ``grpc://HOST:PORT``: Optuna's storage proxy in front of an
RDB, for many workers) and MLflow's (``tracking.uri``: SQLite under ``mlruns/`` by
default, or a tracking server). Config validation, the sweep, locks, the report and ``ls``
all read the same rules from here.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import sys
import warnings
from pathlib import Path
from typing import Any

from protolab._format import short
from protolab._journal import check_journal
from protolab._lock import lock_for, wait_unlocked
from protolab.errors import StorageError

__all__ = [
    "STORAGE_SCHEMES",
    "TRACKING_SCHEMES",
    "check_sqlite_file",
    "check_storage_url",
    "check_store_path",
    "check_tracking_uri",
    "checkpoint_wal",
    "default_storage_path",
    "default_tracking_uri",
    "describe_storage",
    "grpc_address",
    "journal_path",
    "local_store_file",
    "open_storage",
    "redact",
    "scheme",
    "use_wal",
]

# URL schemes accepted for stores; reachability is checked when they are opened.
STORAGE_SCHEMES = ("sqlite", "postgresql", "mysql", "oracle", "mssql", "redis", "grpc")
TRACKING_SCHEMES = ("sqlite", "http", "https", "file", "postgresql", "mysql", "mssql", "databricks")


def scheme(url: str) -> str:
    """``postgresql+psycopg://...`` -> ``postgresql``; a bare path -> ``""``."""
    return url.split("://", 1)[0].split("+", 1)[0] if "://" in url else ""


# A URL inside any text (a message, a config dump): scheme://..., up to a space or a quote.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
# A query key whose value is a secret: the whole key or one of its _-. parts
# (?password=, ?PWD=, ?api_key=, ?access_token=, ?aws_secret_access_key=, ?x-api-key=).
_SECRET_PARTS = frozenset(
    {"password", "passwd", "pwd", "pass", "token", "secret", "key", "apikey", "credential"}
)
_HIDDEN = "***"


def _secret_key(key: str) -> bool:
    from urllib.parse import unquote_plus

    name = unquote_plus(key).strip().lower()
    return name in _SECRET_PARTS or any(p in _SECRET_PARTS for p in re.split(r"[_.\-]", name))


def _redact_query(query: str) -> str:
    """``a=1&password=x;token=y`` -> ``a=1&password=***;token=***`` (separators kept)."""
    parts = re.split(r"([&;])", query)
    for i in range(0, len(parts), 2):
        key, eq, _ = parts[i].partition("=")
        if eq and _secret_key(key):
            parts[i] = f"{key}={_HIDDEN}"
    return "".join(parts)


def _redact_url(url: str) -> str:
    """One URL with its password hidden: in the user-info (``u:PW@``, ``:PW@``) and in
    query keys that name a secret. The user-info ends at the LAST ``@`` before the query,
    so a password holding an unencoded ``@`` or ``/`` is hidden whole."""
    head, _, rest = url.partition("://")
    fragment = ""
    if "#" in rest:
        rest, fragment = rest.split("#", 1)
        fragment = "#" + _redact_query(fragment)
    before, q, query = rest.partition("?")
    userinfo, at, hostpath = before.rpartition("@")
    if at and ":" in userinfo:
        before = f"{userinfo.partition(':')[0]}:{_HIDDEN}@{hostpath}"
    return f"{head}://{before}{q}{_redact_query(query) if q else ''}{fragment}"


def redact(text: str) -> str:
    """Hide the secrets of every URL in ``text`` before anything prints, logs or uploads it.

    The one redaction every channel uses (terminal, MLflow params, tags and artifacts,
    report.json): a URL's password (``postgresql://u:PW@h/db``, ``redis://:PW@host``) and
    the values of its query keys that name a secret (``?password=``, ``?token=``,
    ``?api_key=`` ...; case-insensitive) become ``***``; the rest stays, so the message
    still says which store it was.
    """
    return _URL.sub(lambda m: _redact_url(m.group(0)), text)


def default_tracking_uri(cwd: Path | None = None) -> str:
    """``$MLFLOW_TRACKING_URI``, else a SQLite store under ``./mlruns`` of the working dir."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    root = (cwd or Path.cwd()) / "mlruns"
    return f"sqlite:///{root / 'mlflow.db'}"


def local_store_file(url: str | None, default: Path) -> Path | None:
    """The local file behind a store URL (``None``: the default journal); None for servers."""
    if url is None:
        return default
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///"))
    if url.endswith((".journal", ".log")):
        return Path(url.removeprefix("journal://"))
    return None


def default_storage_path(cwd: Path | None = None) -> Path:
    return (cwd or Path.cwd()) / "mlruns" / "optuna.journal"


def describe_storage(url: str | None) -> str:
    return redact(url) if url else str(default_storage_path())


def journal_path(url: str | None) -> Path | None:
    if url is None:
        return default_storage_path()
    if url.endswith((".journal", ".log")):
        return Path(url.removeprefix("journal://"))
    return None


def grpc_address(url: str, field: str = "study.storage") -> tuple[str, int]:
    """``grpc://HOST:PORT`` -> (host, port); anything else there is a clear exit 2."""
    rest = url.split("://", 1)[1].rstrip("/")
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535 or "/" in rest:
        raise StorageError(
            f"{field}: {redact(url)!r} is not a storage proxy address; allowed: "
            "grpc://HOST:PORT, e.g. grpc://127.0.0.1:13000 (started by protolab storage-proxy)"
        )
    return host.strip("[]"), int(port)


def check_storage_url(url: str | None) -> None:
    """Refuse a study store that cannot work, before anything is written (read-only).

    A local path must be a writable file location; ``sqlite://`` must name a file (alone
    it is an in-memory store that forgets every trial); ``redis://`` needs its package.
    """
    import importlib.util

    journal = journal_path(url)
    if journal is not None:
        check_store_path(journal, "study.storage")
        return
    assert url is not None
    scheme = url.split("://", 1)[0].split("+", 1)[0]
    if scheme == "sqlite":
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if not path or path == ":memory:":
            raise StorageError(
                f"study.storage: {describe_storage(url)!r} names no file (an in-memory store "
                "forgets every trial); allowed: sqlite:///PATH/optuna.db"
            )
        check_store_path(Path(path), "study.storage")
        check_sqlite_file(Path(path), "study.storage", "study store")
    elif scheme == "grpc":
        grpc_address(url)
        if importlib.util.find_spec("grpc") is None:
            raise StorageError(
                f"study.storage: {describe_storage(url)!r} needs the grpcio package, which is "
                "not installed; install it with: pip install 'protolab[grpc]'"
            )
    elif scheme == "redis" and importlib.util.find_spec("redis") is None:
        raise StorageError(
            f"study.storage: {describe_storage(url)!r} needs the redis package, which is not "
            "installed; install it with: pip install redis"
        )


def open_storage(url: str | None) -> Any:
    """An Optuna storage for ``study.storage``.

    ``None`` is a journal file under ``mlruns/``: several times cheaper per trial than
    SQLite and safe for several local worker processes (file locks). RDB URLs
    (``sqlite:///``, ``postgresql://`` ...) and ``redis://`` journals serve many machines.
    """
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    if url is None or url.endswith((".journal", ".log")):
        path = default_storage_path() if url is None else Path(url.removeprefix("journal://"))
        note = check_journal(path)  # a torn last line is cut; other damage: exit 2
        if note:
            print(f"note: {note}", file=sys.stderr)
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    scheme = url.split("://", 1)[0].split("+", 1)[0]
    if scheme == "redis":
        from optuna.storages.journal import JournalRedisBackend

        try:
            return JournalStorage(JournalRedisBackend(url))
        except ImportError:
            check_storage_url(url)
            raise
        except Exception as e:  # unreachable server
            raise StorageError(
                f"study.storage: cannot open {describe_storage(url)!r}: {type(e).__name__}: "
                f"{describe_storage(str(e).strip()[:200])}"
            ) from None
    if scheme == "grpc":
        return _open_proxy(url)
    if scheme == "sqlite":
        db = Path(url.split(":///", 1)[1])
        db.parent.mkdir(parents=True, exist_ok=True)
        use_wal(db)
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" but long stable
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, heartbeat_interval=30, grace_period=120)
    except ImportError:
        raise StorageError(
            f"study.storage: no database driver for {describe_storage(url)!r}; for PostgreSQL "
            "install it with: pip install 'protolab[postgres]'"
        ) from None
    except Exception as e:  # unreachable server, bad credentials
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise StorageError(
            f"study.storage: cannot open {describe_storage(url)!r}: {type(e).__name__}: "
            f"{describe_storage(first)}"
        ) from None


def _open_proxy(url: str) -> Any:
    """A client of ``protolab storage-proxy``; a proxy that does not answer in 5 s is exit 2.

    The proxy has no heartbeats and no cross-host lock: the sweep keeps trials alive with
    leases of its own and gives back a trial asked past ``n_trials`` (sweep/_lease.py).
    """
    check_storage_url(url)
    from optuna.storages import GrpcStorageProxy

    host, port = grpc_address(url)
    with warnings.catch_warnings():  # "experimental" since Optuna 4.2
        warnings.simplefilter("ignore")
        proxy = GrpcStorageProxy(host=host, port=port)
    try:
        proxy.wait_server_ready(timeout=5)
    except Exception as e:
        proxy.close()
        raise StorageError(
            f"study.storage: no storage proxy answers at {redact(url)!r} ({type(e).__name__}); "
            "start one with: protolab storage-proxy postgresql://... --port "
            f"{port}"
        ) from None
    return proxy


def check_store_path(path: Path, field: str, kind: str = "file") -> None:
    """A local store's path: not a folder, below folders only, in a writable place."""
    if path.is_dir() and kind == "file":
        raise StorageError(f"{field}: {path} is a directory; allowed: a file path")
    probe = path if path.exists() else path.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir() and probe != path:
        raise StorageError(f"{field}: {path} lies below {probe}, which is a file, not a directory")
    target = path if path.exists() else probe
    if not os.access(target, os.W_OK):
        raise StorageError(
            f"{field}: {path} cannot be written ({target} is not writable by this user)"
        )
    if not path.exists() and not _can_create_in(probe):
        raise StorageError(
            f"{field}: {path} cannot be created: nothing can be created in {probe} (a "
            "read-only or virtual file system); allowed: a path in a writable folder"
        )


def _can_create_in(folder: Path) -> bool:
    """Whether a file or folder can be made in ``folder``: tried, then removed at once.

    ``os.access`` answers yes for root everywhere, also on /proc and on a read-only mount
    (where creating the store's folders later fails with a traceback)."""
    import tempfile

    try:
        os.rmdir(tempfile.mkdtemp(prefix=".protolab-probe-", dir=folder))
    except OSError:
        return False
    return True


def _settled_size(path: Path) -> int:
    """The file's size once no process is creating it. A fresh SQLite store has no header
    yet (0 bytes) while another worker, holding the store's lock, creates its tables: wait
    for that lock, then look again; a file still empty then is one."""
    size = path.stat().st_size
    if size < 100:  # SQLite's header is 100 bytes
        wait_unlocked(lock_for(path))
        size = path.stat().st_size
    return size


def check_sqlite_file(path: Path, field: str, what: str) -> None:
    """An existing SQLite store must be whole: empty or truncated files are refused.

    The file is read through SQLite only, never opened here: closing any other descriptor
    of it drops every lock this process's SQLite connections hold on it (POSIX locks are
    per process), and in WAL mode another process may then take the store for unused and
    remove its log under them (a test's own MLflow client read a stale store that way)."""
    if not path.is_file():
        return
    size = _settled_size(path)
    hint = f"move it away to start a new {what}, or restore it from a backup"
    if size == 0:
        raise StorageError(
            f"{field}: {path} is empty (0 bytes), not a {what}: was it truncated? "
            f"protolab will not replace it silently; {hint}"
        )
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            row = con.execute("PRAGMA quick_check").fetchone()
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        if "not a database" in str(e):  # no SQLite header
            raise StorageError(
                f"{field}: {path} is not an SQLite database ({size} bytes); {hint}"
            ) from None
        raise StorageError(f"{field}: {path} is damaged ({e}); {hint}") from None
    if row is None or row[0] != "ok":
        detail = short(row[0] if row else "no answer", 120)
        raise StorageError(f"{field}: {path} is damaged (quick_check: {detail}); {hint}")


def check_tracking_uri(cfg_uri: str | None, default: str) -> None:
    """The tracking store: a URI from the environment is checked (and blamed) as such."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    field = "tracking.uri" if cfg_uri else "$MLFLOW_TRACKING_URI" if env else "tracking.uri"
    uri = cfg_uri or env or default
    if cfg_uri is None and env and scheme(env) not in TRACKING_SCHEMES:
        raise StorageError(
            f"$MLFLOW_TRACKING_URI (from the environment; tracking.uri is not set): unsupported "
            f"URI {short(redact(env))}; allowed: sqlite:///FILE, http(s)://HOST:PORT, "
            "postgresql://..., or unset it for sqlite:///mlruns/mlflow.db"
        )
    if uri.startswith("sqlite:"):
        path = uri.split(":///", 1)[1] if ":///" in uri else ""
        if not path or path == ":memory:":
            raise StorageError(
                f"{field}: {short(uri)} names no file; allowed: sqlite:///PATH/mlflow.db"
            )
        check_store_path(Path(path), field)
        check_sqlite_file(Path(path), field, "MLflow store")
    elif uri.startswith("file:"):
        check_store_path(Path(uri.removeprefix("file://")), field, kind="dir")


# --- SQLite journal mode -------------------------------------------------------------------

# File systems where SQLite's WAL mode is safe: local ones, whose shared memory (the
# ``-shm`` index every connection maps) works. On a network file system (NFS, SMB,
# Lustre ...) WAL is unsafe, so a store there keeps the rollback journal.
_LOCAL_FILE_SYSTEMS = frozenset(
    {"ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "f2fs", "tmpfs", "overlay", "jfs", "reiserfs"}
)


def _file_system(path: Path) -> str | None:
    """The type of the file system ``path`` lies on (Linux: the longest mount point in
    /proc/self/mounts above it); None where it cannot be told."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return None
    target = str(path.resolve())
    best, kind = "", None
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def use_wal(db: Path) -> None:
    """Put the local SQLite store ``db`` in write-ahead-log mode (created if missing), once.

    A store's journal mode is kept in the file, so every later connection (MLflow's and
    Optuna's SQLAlchemy engines, ``mlflow ui``, other workers) uses it. Each commit then
    appends to the ``-wal`` file and syncs it once, instead of writing and syncing a
    rollback journal, the database and the folder: a third to half of each MLflow write's
    time on this machine (issue 26). ``synchronous`` stays at SQLite's default (FULL):
    every commit is on disk before it returns, as before, and a crash cannot corrupt the
    store. Only on file systems known to be local (see ``_LOCAL_FILE_SYSTEMS``); best
    effort: a store that cannot be switched (read-only, busy, not a database) is left as
    it is, and whoever opens it next reports what is wrong with it.
    """
    if _file_system(db.parent if not db.exists() else db) not in _LOCAL_FILE_SYSTEMS:
        return
    fresh = not db.exists()
    try:
        con = sqlite3.connect(db, timeout=5)
        try:
            if con.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                con.execute("PRAGMA journal_mode=WAL").fetchone()
        finally:
            con.close()
    except (sqlite3.Error, OSError):
        # never leave an empty file behind: check_sqlite_file refuses one as truncated
        if fresh and db.is_file() and db.stat().st_size == 0:
            db.unlink()


def checkpoint_wal(db: Path) -> None:
    """Copy what a WAL-mode store holds in its ``-wal`` file into the database file, so
    that the ``.db`` file alone is whole after a command ends: a process that exits
    without closing its connections (the tracking writer) leaves the log for the next
    opener to read, and a copy of the ``.db`` file alone would miss it. Best effort and
    never waiting (PASSIVE): what another process is still writing, it checkpoints itself.

    Then, when no other connection is reading or writing, the log is cut to zero bytes
    (TRUNCATE, without waiting): a ``.db`` file later put back from a backup beside a
    left-over log would otherwise be read through that stale log as a damaged store.
    """
    if not Path(f"{db}-wal").is_file():
        return
    with contextlib.suppress(sqlite3.Error):
        con = sqlite3.connect(db, timeout=1)
        try:
            con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            con.execute("PRAGMA busy_timeout = 0")
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            con.close()
