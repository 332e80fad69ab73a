"""Real servers for tests, started on 127.0.0.1 (never mocked): PostgreSQL and MLflow."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for version in sorted(PG_BIN.glob("*"), reverse=True):
        if (version / "bin" / name).exists():
            return str(version / "bin" / name)
    return None


def postgres(root: Path, password: str, databases: tuple[str, ...] = ()) -> Iterator[str]:
    """A throwaway PostgreSQL cluster; yields ``postgresql://protolab:PASSWORD@127.0.0.1:PORT/protolab``.

    ``databases`` are created beside ``protolab`` with the same owner (swap the URL's last part).

    PostgreSQL refuses to run as root, so as root the cluster runs as the ``postgres`` user.
    """
    initdb, pg_ctl = _pg_tool("initdb"), _pg_tool("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")
    as_user: list[str] = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    data = root / "pgdata"
    root.mkdir(parents=True, exist_ok=True)
    if as_user:
        shutil.chown(root, "postgres")
        os.chmod(root, 0o700)
    port = free_port()
    run = {"check": True, "capture_output": True}
    pwfile = root / "pw"
    pwfile.write_text("pgadmin\n")
    if as_user:
        shutil.chown(pwfile, "postgres")
    subprocess.run([*as_user, initdb, "-D", str(data), "-A", "md5", "-U", "postgres",
                    f"--pwfile={pwfile}"], **run)  # type: ignore[call-overload]  # fmt: skip
    subprocess.run([*as_user, pg_ctl, "-D", str(data), "-w", "-l", str(root / "log"), "-o",
                    f"-h 127.0.0.1 -p {port} -k {root}", "start"], **run)  # type: ignore[call-overload]  # fmt: skip
    try:
        env = {**os.environ, "PGPASSWORD": "pgadmin"}
        psql = _pg_tool("psql") or "psql"
        sql = (
            f"CREATE USER protolab PASSWORD '{password}'; CREATE DATABASE protolab OWNER protolab;"
        )
        sql += "".join(f"; CREATE DATABASE {name} OWNER protolab" for name in databases)
        for statement in sql.split("; "):
            subprocess.run([psql, "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-c",
                            statement], env=env, **run)  # type: ignore[call-overload]  # fmt: skip
        yield f"postgresql://protolab:{password}@127.0.0.1:{port}/protolab"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)  # fmt: skip


def mlflow_server(root: Path) -> Iterator[str]:
    """A real MLflow tracking server on 127.0.0.1 over a SQLite store in ``root``."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
         "--default-artifact-root", (root / "artifacts").as_uri(), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError("mlflow server exited") from None
                time.sleep(0.5)
        else:
            raise RuntimeError("mlflow server did not start in 120 s")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def protolab_server(root: Path, store: str) -> Iterator[str]:
    """``protolab server`` for real: MLflow over ``store``, artifacts served from ``root``."""
    port = free_port()
    log = open(root / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "protolab.cli", "server", "--port", str(port),
         "--artifacts", str(root / "artifacts")],
        env={**os.environ, "MLFLOW_BACKEND_STORE_URI": store}, stdout=log, stderr=log,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while "ready after" not in (root / "server.log").read_text(errors="ignore"):
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError((root / "server.log").read_text(errors="ignore")[-2000:])
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()


def storage_proxy(root: Path, storage: str) -> Iterator[str]:
    """``protolab storage-proxy`` for real in front of ``storage``; yields ``grpc://...``."""
    port = free_port()
    log_path = root / "proxy.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "protolab.cli", "storage-proxy", "--port", str(port)],
        env={**os.environ, "PROTOLAB_PROXY_STORAGE": storage}, stdout=log, stderr=log,
    )  # fmt: skip
    try:
        deadline = time.time() + 120
        while "workers use it with" not in log_path.read_text(errors="ignore"):
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(log_path.read_text(errors="ignore")[-2000:])
            time.sleep(0.2)
        yield f"grpc://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
