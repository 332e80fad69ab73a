"""``protolab storage-proxy STORAGE``: Optuna's gRPC storage proxy in front of a database.

With hundreds of workers the database's connection limit is the bottleneck: each worker
holds a pool of connections to PostgreSQL. The proxy holds one pool and serves every worker
over gRPC (``study.storage: grpc://HOST:PORT``); it also caches trials, so a worker's
``get_trials`` reads only what changed. It is Optuna's own ``run_grpc_proxy_server``.

What it gives up, and how the sweep makes up for it (sweep/_lease.py):

- **Heartbeats.** The proxy does not carry Optuna's heartbeats. Workers renew a lease on
  their trial instead (``protolab.lease_until``, every ``study.heartbeat_s``); a trial whose
  lease ran out for 4x that is failed, its runs ended and its configuration retried, as on
  PostgreSQL. Host clocks must agree to within ``heartbeat_s`` (NTP does).
- **The cross-host lock.** Count-then-ask is not one step through the proxy, so two workers
  may both ask the last trial: the later-numbered one is given back unrun (FAIL, reason
  ``surplus``), so no more than ``n_trials`` run.
- **Journal stores.** The proxy serves RDB storages only (optuna#6084).

It binds to 127.0.0.1 unless ``--host`` says otherwise; the database URL is printed with
its password redacted. Everything is checked before it starts (exit 2). The proxy has no
login and no TLS, so any other ``--host`` is warned about on stderr, and the address it
tells workers is one they can reach (this machine's name or IP, never ``0.0.0.0``).
"""

from __future__ import annotations

from protolab.errors import StorageError, UserInputError

__all__ = ["PROXY_SCHEMES", "run_proxy"]

PROXY_SCHEMES = ("postgresql", "mysql", "sqlite", "oracle", "mssql")


def _check(storage: str, host: str, port: int) -> None:
    from protolab._stores import check_storage_url, redact, scheme
    from protolab.commands._ui import check_port

    if scheme(storage) not in PROXY_SCHEMES:
        raise UserInputError(
            f"STORAGE: the proxy serves databases only, but got {redact(storage)!r}; allowed: "
            "postgresql://..., mysql://..., sqlite:///FILE (journal files and Redis: no, "
            "optuna#6084)"
        )
    try:
        check_storage_url(storage)
    except StorageError as e:
        raise StorageError(str(e).replace("study.storage", "STORAGE", 1)) from None
    check_port(host, port)


_EXPOSED = (
    "Optuna's storage proxy, with no login and no TLS: anyone can read, change and delete "
    "every study in {store} (its trials, params and values)"
)
_PROTECT = (
    "bind to an interface only your workers reach (a private network), firewall the port to "
    "their addresses, or keep 127.0.0.1 and tunnel (ssh -L {port}:127.0.0.1:{port} HOST)"
)


def run_proxy(storage: str, host: str, port: int) -> int:
    """Serve ``storage`` on ``grpc://host:port`` until Ctrl-C/SIGTERM; the exit code."""
    _check(storage, host, port)
    import optuna

    from protolab._stores import open_storage, redact
    from protolab.commands._ui import reachable_host, warn_exposed

    try:
        open_storage(storage)  # the database answers, its tables exist (one connection)
    except StorageError as e:
        raise StorageError(str(e).replace("study.storage", "STORAGE", 1)) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cached = optuna.storages.get_storage(storage)  # Optuna's in-process trial cache
    warn_exposed(host, port, _EXPOSED.format(store=redact(storage)), _PROTECT.format(port=port))
    reach = reachable_host(host)
    print(
        f"Optuna storage proxy for {redact(storage)} on grpc://{host}:{port}; Ctrl-C stops it\n"
        f"workers use it with: study.storage=grpc://{reach}:{port}",
        flush=True,
    )
    try:
        optuna.storages.run_grpc_proxy_server(cached, host=host, port=port)
    except KeyboardInterrupt:
        return 130
    return 0
