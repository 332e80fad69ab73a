"""``protolab ui``: MLflow's UI over the study store, started lean, landing on the runs table.

``mlflow ui`` starts 15 processes on this kind of machine (the CLI, a uvicorn supervisor,
4 workers, a job runner and 7 huey consumers for GenAI jobs: ~2.1 GB, 30-76 s to the first
answer on 2 busy cores). protolab's runs need none of the job machinery, and one user needs
one worker, so ``protolab ui`` serves MLflow's own ASGI app (``mlflow.server.fastapi_app``)
in this process with uvicorn, configured the way ``mlflow server`` configures its workers,
with job execution off: one process, ~250 MB, a few seconds. If the installed MLflow lays
its server out differently, it falls back to ``mlflow server --workers 1`` with job
execution off (two processes).

MLflow 3 opens an experiment on a GenAI "traces" overview; ``?workflowType=machine_learning``
lands on the training-runs table instead, so that is the URL printed (and opened).

The store URI never appears on a command line (``ps`` shows those to every user): the
fallback hands it to ``mlflow server`` in its environment. A ``--host`` other than a
loopback address serves the UI and MLflow's REST API, without a login, to anyone who
reaches the port: :func:`warn_exposed` says so on stderr (``server`` and ``storage-proxy``
use it too).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from protolab.commands._studies import (
    StudyExperiment,
    check_store,
    find_study,
    mlflow_client,
    study_experiments,
)
from protolab.errors import UserInputError

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request

__all__ = [
    "ML_MODE",
    "is_loopback",
    "open_ui",
    "parent_url",
    "reachable_host",
    "runs_url",
    "warn_exposed",
]

ML_MODE = "workflowType=machine_learning"

# What ``mlflow server`` hands its uvicorn workers (mlflow/server/constants.py, 3.x).
_STORE_VAR = "_MLFLOW_SERVER_FILE_STORE"
_REGISTRY_VAR = "_MLFLOW_SERVER_REGISTRY_STORE"
_ARTIFACT_ROOT_VAR = "_MLFLOW_SERVER_ARTIFACT_ROOT"
_SERVE_ARTIFACTS_VAR = "_MLFLOW_SERVER_SERVE_ARTIFACTS"
_DESTINATION_VAR = "_MLFLOW_SERVER_ARTIFACT_DESTINATION"


def runs_url(base: str, experiment_id: str) -> str:
    """The experiment's training-runs table (not the GenAI traces overview)."""
    return f"{base}/#/experiments/{experiment_id}/runs?{ML_MODE}"


def parent_url(base: str, experiment_id: str, run_id: str) -> str:
    """A run's page (the parent's shows the study's headline in its description)."""
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?{ML_MODE}"


def is_loopback(host: str) -> bool:
    """True when ``host`` is this machine only (127.0.0.0/8, ::1, a name for them)."""
    name = host.strip("[]")
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        pass
    if name in ("", "0.0.0.0", "::"):
        return False
    try:
        found = {str(info[4][0]) for info in socket.getaddrinfo(name, None)}
    except (socket.gaierror, UnicodeError):
        return False
    return bool(found) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in found)


def reachable_host(host: str) -> str:
    """The address other machines use for a server bound to ``host``: itself, or for a
    wildcard (0.0.0.0, ::) this machine's name if it resolves off loopback, else its IP."""
    if host not in ("0.0.0.0", "::", ""):
        return f"[{host}]" if ":" in host else host
    name = socket.getfqdn()
    with contextlib.suppress(OSError):
        if not is_loopback(name):
            return name
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # no packet is sent: it only picks the outgoing interface
        return str(s.getsockname()[0])
    return name


def warn_exposed(host: str, port: int, exposed: str, protect: str) -> None:
    """On stderr, for a non-loopback ``host``: who can reach what, and how to close it."""
    if is_loopback(host):
        return
    print(
        f"warning: --host {host} listens on port {port} for every machine that can reach "
        f"this one: {exposed}. To protect it: {protect}",
        file=sys.stderr,
        flush=True,
    )


def _public_url(store: str) -> str:
    """A tracking server's URL without its user-info and query (no credentials to print,
    nor to hand to a browser on its command line)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(store)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")).rstrip("/")


_UI_EXPOSED = (
    "MLflow's UI and REST API, with no login: anyone can read, change and delete every run "
    "and study in {store}, and register a model (a pyfunc model runs its own code in "
    "`protolab predict --trust`)"
)
_UI_PROTECT = (
    "keep the default 127.0.0.1 and reach it through an SSH tunnel (ssh -L "
    "{port}:127.0.0.1:{port} HOST), or share a `protolab server --auth` behind a firewall "
    "and a TLS proxy (docs/deploy.md)"
)


def _base_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


def check_port(host: str, port: int) -> None:
    """Exit 2 before anything starts when the port is out of range, taken, or not ours."""
    if not 1 <= port <= 65535:
        raise UserInputError(f"--port: {port} is not a port; allowed: 1-65535")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except socket.gaierror:
            raise UserInputError(f"--host: cannot resolve {host!r}") from None
        except OSError as e:
            raise UserInputError(
                f"--port: cannot listen on {host}:{port} ({e.strerror or e}); "
                "pick a free one with --port"
            ) from None


def _artifact_root(store: str) -> str | None:
    if store.startswith("sqlite:///"):
        return (Path(store.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
    return None


def server_env(store: str) -> dict[str, str]:
    """The environment ``mlflow server`` gives its workers, minus job execution."""
    env = {
        _STORE_VAR: store,
        _REGISTRY_VAR: store,
        _SERVE_ARTIFACTS_VAR: "true",
        "_MLFLOW_SGI_NAME": "uvicorn",
        "_MLFLOW_IN_JOB_EXECUTOR": "false",
        "_MLFLOW_SERVER_BOOT_ID": uuid.uuid4().hex,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_ENABLE_WORKSPACES": "false",
    }
    root = _artifact_root(store)
    if root is not None:
        env[_ARTIFACT_ROOT_VAR] = root
        env[_DESTINATION_VAR] = root
    return env


def _announce(base: str, url: str, open_browser: bool, t0: float, stop: threading.Event) -> None:
    """Once the server answers, say so (and open the browser with ``--open``)."""
    while not stop.is_set():
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                r.read()
            break
        except OSError:
            time.sleep(0.1)
    else:
        return
    print(f"ready after {time.perf_counter() - t0:.1f} s; Ctrl-C stops it", flush=True)
    if open_browser:
        import webbrowser

        webbrowser.open(url)


def _resolve(store: str, study: str | None) -> StudyExperiment:
    from protolab.tracking import redact

    return find_study(study_experiments(mlflow_client(store)), study, redact(store))


def open_ui(port: int, host: str, uri: str | None, study: str | None, open_browser: bool) -> None:
    """Serve (or, for a tracking server, just point at) the study's runs table."""
    from protolab.tracking import default_tracking_uri, redact

    t0 = time.perf_counter()
    store = uri or default_tracking_uri()
    check_store(store)
    if store.startswith(("http://", "https://")):  # a tracking server has its own UI
        target = _resolve(store, study)
        url = runs_url(_public_url(store), target.experiment_id)
        print(f"study {target.study} on the tracking server {redact(store)}:\n  {url}")
        if open_browser:
            import webbrowser

            webbrowser.open(url)
        return
    check_port(host, port)
    exposed = _UI_EXPOSED.format(store=redact(store))
    warn_exposed(host, port, exposed, _UI_PROTECT.format(port=port))
    os.environ.update(server_env(store))  # before mlflow.server is imported
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    target = _resolve(store, study)
    base = _base_url(host, port)
    url = runs_url(base, target.experiment_id)
    _print_links(target, base, url, redact(store))
    stop = threading.Event()
    threading.Thread(
        target=_announce, args=(base, url, open_browser, t0, stop), daemon=True
    ).start()
    try:
        _serve(host, port, store)
    finally:
        stop.set()


def _print_links(target: StudyExperiment, base: str, url: str, store: str) -> None:
    lines = [f"MLflow UI for study {target.study} ({store}), starting:", f"  {url}"]
    if target.parent_run_id:
        link = parent_url(base, target.experiment_id, target.parent_run_id)
        lines += ["the verdict and the pair table (the parent run):", f"  {link}"]
    if target.family_view:
        lines += ["dynamic vs static side by side (runs grouped by family):"]
        lines += [f"  {url}&viewStateShareKey={target.family_view}"]
    print("\n".join(lines), flush=True)


def _serve(host: str, port: int, store: str) -> None:
    """MLflow's app in this process; ``mlflow server --workers 1`` if it is laid out anew."""
    import warnings

    try:
        import uvicorn  # first: MLflow installs its security middleware when it sees uvicorn
        from mlflow.server import constants

        expected = (constants.BACKEND_STORE_URI_ENV_VAR, constants.ARTIFACT_ROOT_ENV_VAR)
        if expected != (_STORE_VAR, _ARTIFACT_ROOT_VAR):
            raise ImportError("mlflow.server.constants changed")
        with warnings.catch_warnings():  # starlette's deprecation notes: not the user's concern
            warnings.simplefilter("ignore")
            from mlflow.server.fastapi_app import app
    except (ImportError, AttributeError):
        _serve_with_mlflow_cli(host, port, store)
        return
    _default_to_training_mode(app)
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.run(app, host=host, port=port, workers=1, log_level="warning", access_log=False)


# The UI keeps its GenAI / Model-training switch in the browser's localStorage (key
# ``mlflow.workflowType`` version 1) and only reads ``?workflowType=`` from the URL, which its
# own links drop: a click from the parent run to a child run lands in GenAI mode. The page
# served here makes "Model training" the default until the user flips the switch.
_TRAINING_DEFAULT = (
    '<script>try{var k="mlflow.workflowType_v1";if(!localStorage.getItem(k))'
    'localStorage.setItem(k,JSON.stringify("machine_learning"))}catch(e){}</script>'
)


def _default_to_training_mode(app: Starlette) -> None:
    """Serve MLflow's ``index.html`` with :data:`_TRAINING_DEFAULT` in its ``<head>``."""
    import mlflow.server
    from starlette.responses import HTMLResponse
    from starlette.routing import Route

    index = Path(mlflow.server.__file__).parent / "js" / "build" / "index.html"
    if os.environ.get("_MLFLOW_STATIC_PREFIX") or not index.is_file():
        return  # a prefixed or source install: MLflow's own page, unchanged
    html = index.read_text()
    if "<head>" not in html:
        return
    page = html.replace("<head>", "<head>" + _TRAINING_DEFAULT, 1)

    async def home(request: Request) -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

    app.router.routes.insert(0, Route("/", home, methods=["GET"]))


def _serve_with_mlflow_cli(host: str, port: int, store: str) -> None:
    """``mlflow server``, the store in its environment (``MLFLOW_BACKEND_STORE_URI``): a
    command line is visible to every user in ``ps``, with any password in it."""
    cmd = [sys.executable, "-m", "mlflow", "server"]
    cmd += ["--host", host, "--port", str(port), "--workers", "1"]
    root = _artifact_root(store)
    if root is not None:
        cmd += ["--default-artifact-root", root]
    env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": store}
    proc = subprocess.Popen(cmd, env=env)
    try:
        proc.wait()
    except KeyboardInterrupt:
        proc.wait(timeout=30)
