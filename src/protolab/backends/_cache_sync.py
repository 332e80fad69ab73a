"""The compile cache carried through a tracking server, for hosts that share only that.

``hardware.compile_cache_sync: true``: a run whose compile missed uploads the entries it
wrote (one ``.tar.gz``) as an artifact of one MLflow run per cache key, in the experiment
``protolab-compile-cache`` of the study's tracking store; a run about to compile downloads
that run's archives into its own cache folder first, so its compile hits.

The trust boundary: inductor's entries hold Python source and compiled shared libraries
that the next compile imports, and an archive's member names would form paths here. So
downloading is allowed only when the user said ``--trust`` (or ``PROTOLAB_TRUST=1``): the
CLI refuses the setting otherwise (exit 2, before any store is written) and never sets
:data:`SYNC_ENV`, which is what turns syncing on in a backend. Even trusted, an archive's
members are checked before anything is written: plain files and folders only (no links,
devices), relative names without ``..``; an archive that breaks a rule is skipped whole.

Syncing never fails a run: a store that cannot be reached is one warning on stderr and the
compile goes on locally (cold if nothing is there).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import sys
import tarfile
import tempfile
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from protolab._stores import redact

__all__ = ["EXPERIMENT", "SYNC_ENV", "ArchiveError", "pack", "pull", "push", "sync_uri", "unpack"]

SYNC_ENV = "PROTOLAB_COMPILE_CACHE_SYNC"  # the tracking URI to carry entries through
EXPERIMENT = "protolab-compile-cache"
_KEY, _FOLDER = "protolab.compile_cache.key", "protolab.compile_cache.folder"
_SUFFIX = ".tar.gz"
_DONE: set[tuple[str, str]] = set()  # (folder, key digest) pulled by this process already


class ArchiveError(ValueError):
    """An archive member that would write outside the cache folder, or is not a plain file."""


def sync_uri() -> str | None:
    """The tracking URI entries are carried through (None: syncing is off)."""
    return os.environ.get(SYNC_ENV) or None


def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _warn(what: str, e: BaseException) -> None:
    print(f"protolab: compile cache sync: {what}: {type(e).__name__}: {e}", file=sys.stderr)


def _find_run(client: Any, folder: Path, digest: str, create: bool) -> str | None:
    """The one run of this cache key (framework folder + job key), made when ``create``."""
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        if not create:
            return None
        with contextlib.suppress(Exception):  # another host made it meanwhile
            client.create_experiment(EXPERIMENT)
        exp = client.get_experiment_by_name(EXPERIMENT)
    found = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`{_KEY}` = '{digest}' and tags.`{_FOLDER}` = '{folder.name}'",
        max_results=1,
    )
    if found:
        return str(found[0].info.run_id)
    if not create:
        return None
    run = client.create_run(
        exp.experiment_id, run_name=f"{digest[:12]} {folder.name}"[:250],
        tags={_KEY: digest, _FOLDER: folder.name},
    )  # fmt: skip
    client.set_terminated(run.info.run_id, "FINISHED")
    return str(run.info.run_id)


def pack(folder: Path, names: Iterable[str], out: Path) -> int:
    """``names`` (relative to ``folder``) into the archive ``out``; returns files packed."""
    count = 0
    with tarfile.open(out, "w:gz") as tar:
        for name in sorted(names):
            path = folder / name
            if path.is_file() and not path.is_symlink():
                tar.add(path, arcname=posixpath.normpath(name.replace(os.sep, "/")))
                count += 1
    return count


def _member_name(member: tarfile.TarInfo) -> str:
    """The member's checked relative name; raises :class:`ArchiveError` when it is unsafe."""
    name = member.name
    if not (member.isfile() or member.isdir()):
        raise ArchiveError(f"{name!r} is not a plain file or folder (a link or device)")
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or ":" in parts[0] or ".." in parts or "\0" in name:
        raise ArchiveError(f"{name!r} is not a relative path inside the cache folder")
    clean = posixpath.normpath(name.replace("\\", "/"))
    if clean in ("", ".") or clean.startswith(".."):
        raise ArchiveError(f"{name!r} is not a relative path inside the cache folder")
    return clean


def unpack(archive: Path, folder: Path) -> int:
    """Write an archive's files into ``folder`` (files present stay); returns files written.

    Every member is checked before the first file is written: one unsafe member
    (:class:`ArchiveError`) refuses the whole archive.
    """
    written = 0
    with tarfile.open(archive, "r:gz") as tar:
        members = [(m, _member_name(m)) for m in tar.getmembers()]
        for member, name in members:
            if not member.isfile():
                continue
            target = folder.joinpath(*name.split("/"))
            if target.exists():
                continue
            source = tar.extractfile(member)
            if source is None:
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            part = target.with_name(f"{target.name}.{os.getpid()}.part")
            with source, open(part, "wb") as f:
                f.write(source.read())
            os.replace(part, target)
            written += 1
    return written


def pull(folder: Path, digest: str) -> int:
    """Download this key's archives into ``folder`` before a compile; returns files written."""
    uri = sync_uri()
    if uri is None or (folder.name, digest) in _DONE:
        return 0
    _DONE.add((folder.name, digest))
    written = 0
    try:
        client = _client(uri)
        run_id = _find_run(client, folder, digest, create=False)
        if run_id is None:
            return 0
        with tempfile.TemporaryDirectory(prefix="protolab-cache-pull-") as tmp:
            for art in client.list_artifacts(run_id):
                if art.is_dir or not art.path.endswith(_SUFFIX) or "/" in art.path:
                    continue
                local = Path(client.download_artifacts(run_id, art.path, tmp))
                try:
                    written += unpack(local, folder)
                except (ArchiveError, tarfile.TarError) as e:
                    _warn(f"archive {art.path} of run {run_id} refused", e)
    except Exception as e:  # a store that cannot be reached: compile locally
        _warn(f"could not download entries from {redact(uri)}", e)
    return written


def push(folder: Path, digest: str, names: Iterable[str]) -> bool:
    """Upload the entries a miss wrote (``names``, relative to ``folder``) as one archive."""
    uri = sync_uri()
    names = list(names)
    if uri is None or not names:
        return False
    try:
        with tempfile.TemporaryDirectory(prefix="protolab-cache-push-") as tmp:
            archive = Path(tmp) / f"entries-{uuid.uuid4().hex[:12]}{_SUFFIX}"
            if pack(folder, names, archive) == 0:
                return False
            client = _client(uri)
            run_id = _find_run(client, folder, digest, create=True)
            client.log_artifact(run_id, str(archive))
        _DONE.add((folder.name, digest))
        return True
    except Exception as e:
        _warn(f"could not upload entries to {redact(uri)}", e)
        return False
