"""``protolab server``: a team's MLflow tracking server over a database, serving artifacts.

Workers on any host then log with ``tracking.uri: http://HOST:PORT`` (runs, metrics and
artifacts all go through the server; no shared filesystem is needed). The server is
MLflow's own ``mlflow server``, started lean: ``--workers 1`` by default and MLflow's
GenAI job runner off (``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``), so it is two
processes instead of ~15. The database URL travels in the environment
(``MLFLOW_BACKEND_STORE_URI``), never on a command line that ``ps`` shows, and is printed
with its password redacted. It binds to 127.0.0.1 unless ``--host`` says otherwise; any
other address is warned about on stderr (anyone reaching the port reads and writes every
run). ``--auth`` runs MLflow's basic-auth app (``--app-name basic-auth``): every request
needs a user and password (the first start creates the ``admin`` user with
``$MLFLOW_AUTH_ADMIN_PASSWORD``; workers log in with ``$MLFLOW_TRACKING_USERNAME`` and
``$MLFLOW_TRACKING_PASSWORD``). It is HTTP: put a TLS proxy in front for other networks.

Everything is checked before anything starts (exit 2): the URL's scheme, that the
database answers, the port, the artifact folder.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from protolab.errors import StorageError, UserInputError

__all__ = ["SERVER_SCHEMES", "check_server_args", "serve"]

SERVER_SCHEMES = ("postgresql", "mysql", "mssql", "sqlite")
_START_TIMEOUT_S = 300.0  # a fresh database is migrated first (~20-60 s on 2 cores)


def _check_store(store: str | None) -> str:
    from protolab._stores import redact, scheme

    if not store:
        raise UserInputError(
            "--backend-store-uri: missing; give the database, e.g. "
            "postgresql://USER:PASSWORD@DBHOST:5432/mlflow (or set $MLFLOW_BACKEND_STORE_URI)"
        )
    if scheme(store) not in SERVER_SCHEMES:
        raise UserInputError(
            f"--backend-store-uri: unsupported URL {redact(store)!r}; allowed: "
            "postgresql://..., mysql://..., mssql://..., sqlite:///FILE"
        )
    return store


def _check_reachable(store: str) -> None:
    """Connect once (read-only, 10 s at most): a wrong password or host is exit 2 now."""
    import sqlalchemy

    from protolab._stores import redact, scheme

    if scheme(store) == "sqlite":
        path = Path(store.split(":///", 1)[1]) if ":///" in store else None
        if path is None or not (path.parent if not path.exists() else path).exists():
            raise StorageError(f"--backend-store-uri: {redact(store)!r}: no such folder")
        return
    args = {"connect_timeout": 10} if scheme(store) == "postgresql" else {}
    try:
        engine = sqlalchemy.create_engine(store, connect_args=args)
        with engine.connect():
            pass
        engine.dispose()
    except ImportError:
        raise StorageError(
            f"--backend-store-uri: no database driver for {redact(store)!r}; for PostgreSQL "
            "install it with: pip install 'protolab[postgres]'"
        ) from None
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise StorageError(
            f"--backend-store-uri: cannot open {redact(store)!r}: {redact(first)[:300]}"
        ) from None


def _check_artifacts(artifacts: str) -> str:
    """A local folder (created when missing) or a URI MLflow resolves (s3://, gs://...)."""
    if "://" in artifacts:
        return artifacts
    path = Path(artifacts).expanduser().resolve()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise UserInputError(f"--artifacts: {existing} is a file; allowed: a folder")
    if not os.access(existing, os.W_OK):
        raise UserInputError(f"--artifacts: {existing} is not writable")
    return str(path)


def check_server_args(store: str | None, artifacts: str, host: str, port: int) -> tuple[str, str]:
    """Every argument checked before anything starts; the store URL and artifact place."""
    from protolab.commands._ui import check_port

    url = _check_store(store)
    where = _check_artifacts(artifacts)
    check_port(host, port)
    _check_reachable(url)
    return url, where


def _check_auth(auth: bool) -> None:
    """MLflow's auth app needs Flask-WTF, and refuses its first start without an admin
    password: say both now, before anything starts."""
    import importlib.util

    env = os.environ
    if auth and importlib.util.find_spec("flask_wtf") is None:
        raise UserInputError(
            "--auth: MLflow's basic-auth app needs Flask-WTF (CSRF checks), not installed "
            "here; install it with: pip install 'protolab[auth]'"
        )
    if not auth or env.get("MLFLOW_AUTH_CONFIG_PATH") or env.get("MLFLOW_AUTH_ADMIN_PASSWORD"):
        return
    if Path("basic_auth.db").is_file():  # MLflow's default user store: the admin exists
        return
    raise UserInputError(
        "--auth: the first start creates MLflow's admin user, and needs its password: set "
        "$MLFLOW_AUTH_ADMIN_PASSWORD (or $MLFLOW_AUTH_CONFIG_PATH to a basic_auth.ini with "
        "admin_password and where the user store lives)"
    )


def _command(
    where: str, host: str, port: int, workers: int, allowed: str | None, auth: bool
) -> list[str]:
    cmd = [sys.executable, "-m", "mlflow", "server", "--serve-artifacts"]
    cmd += ["--artifacts-destination", where, "--host", host, "--port", str(port)]
    cmd += ["--workers", str(workers)]
    cmd += ["--app-name", "basic-auth"] if auth else []
    return cmd + (["--allowed-hosts", allowed] if allowed else [])


def _warn(host: str, port: int, store: str, auth: bool) -> None:
    from protolab.commands._ui import warn_exposed

    if auth:
        exposed = (
            "MLflow's UI and REST API behind basic auth, over plain HTTP: passwords and "
            "runs cross the network readable, and every user can read all runs (the "
            "default permission)"
        )
        protect = "a TLS proxy in front (nginx, caddy), a firewall to your team's hosts"
    else:
        exposed = (
            "MLflow's UI and REST API with no login: anyone can read, change and delete "
            f"every run and study in {store}, and register a model (a pyfunc model runs its "
            "own code in `protolab predict --trust`)"
        )
        protect = (
            "--auth (MLflow's basic auth) behind a TLS proxy, a firewall to your team's "
            "hosts, or keep 127.0.0.1 and reach it through SSH tunnels (docs/deploy.md)"
        )
    warn_exposed(host, port, exposed, protect)


def _wait_healthy(proc: subprocess.Popen[bytes], base: str) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < _START_TIMEOUT_S:
        if proc.poll() is not None:
            raise StorageError(f"mlflow server exited with code {proc.returncode} (see above)")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                r.read()
            return time.perf_counter() - t0
        except OSError:
            time.sleep(0.3)
    raise StorageError(f"mlflow server did not answer on {base} in {_START_TIMEOUT_S:.0f} s")


def serve(
    store: str | None,
    artifacts: str,
    host: str,
    port: int,
    workers: int = 1,
    allowed_hosts: str | None = None,
    auth: bool = False,
) -> int:
    """Start ``mlflow server`` and keep it until Ctrl-C/SIGTERM; the server's exit code."""
    from protolab._stores import redact
    from protolab.commands._ui import reachable_host

    url, where = check_server_args(store, artifacts, host, port)
    _check_auth(auth)
    _warn(host, port, redact(url), auth)
    if "://" not in where:
        Path(where).mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": url}
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    if auth:  # the auth app's CSRF key: one per start unless set (shared by its workers)
        env.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", secrets.token_hex(32))
    started: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, frame: Any) -> None:  # mlflow stops its workers, then exits
        if started and started[0].poll() is None:
            started[0].send_signal(signum)

    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, forward)
    proc = subprocess.Popen(_command(where, host, port, workers, allowed_hosts, auth), env=env)
    started.append(proc)
    public = host in ("0.0.0.0", "::", "")
    base = f"http://{'127.0.0.1' if public else host}:{port}"
    remote = f"http://{reachable_host(host)}:{port}"
    try:
        seconds = _wait_healthy(proc, base)
    except StorageError:
        forward(signal.SIGTERM, None)
        proc.wait(timeout=30)
        raise
    print(
        f"MLflow tracking server on {base} (store {redact(url)}, artifacts {where}), "
        f"ready after {seconds:.1f} s; Ctrl-C stops it\n"
        f"workers log to it with: tracking.uri={remote}"
        + (" and $MLFLOW_TRACKING_USERNAME, $MLFLOW_TRACKING_PASSWORD set" if auth else ""),
        flush=True,
    )
    return proc.wait()
