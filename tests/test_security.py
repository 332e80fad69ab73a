"""Issue 25, security: each attack reproduced against the real CLI, and shown closed.

- the trust boundary: a pyfunc model registered in a shared store, a ``hubconf.py``, a
  ``pt2`` program and a tampered ``weights.pt`` run no code without ``--trust``;
- no path from a store: a study tag holding an absolute path or ``../`` names no folder;
  ``export --out`` into someone's non-empty folder needs ``--force``;
- secrets: one URL redaction (user-info with and without a user name, secret query keys),
  and a real sweep on PostgreSQL whose password appears on no output channel;
- exposure: a non-loopback ``--host`` is warned about, ``server --auth`` logs users in, the
  proxy names a reachable address, DDP's store listens on MASTER_ADDR only.

Every command runs as a subprocess (``python -m protolab.cli``): a marker file written by
loaded code would be written by that process, as on a victim's machine.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from protolab._stores import redact
from protolab.commands._ui import is_loopback
from tests import _servers
from tests.conftest import TINY_MLP

PW = "Hunter2-s3cret"


def cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """The real CLI in a fresh process (what a user runs)."""
    full = {**os.environ, **(env or {})}
    full.pop("MLFLOW_TRACKING_URI", None)
    full.pop("PROTOLAB_TRUST", None) if "PROTOLAB_TRUST" not in (env or {}) else None
    return subprocess.run(
        [sys.executable, "-m", "protolab.cli", *args],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line_exit_2(done: subprocess.CompletedProcess[str], *parts: str) -> str:
    """Exit 2 with one message (no traceback) that holds every part."""
    text = done.stdout + done.stderr
    assert done.returncode == 2, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    joined = " ".join(done.stderr.split())
    for part in parts:
        assert part in joined, joined
    return joined


# --- secrets: one redaction --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (f"redis://:{PW}@cache:6379/0", "redis://:***@cache:6379/0"),
        (f"postgresql://u:{PW}@h/db", "postgresql://u:***@h/db"),
        (f"postgresql+psycopg2://u:{PW}@h:5432/db", "postgresql+psycopg2://u:***@h:5432/db"),
        (f"postgresql://u@h/db?password={PW}", "postgresql://u@h/db?password=***"),
        (f"postgresql://u@h/db?sslmode=require&PWD={PW}", "?sslmode=require&PWD=***"),
        (f"https://h/api?Token={PW};api_key={PW}&x=1", "https://h/api?Token=***;api_key=***&x=1"),
        (f"s3://b/k?X-Amz-Secret={PW}&passwd={PW}", "s3://b/k?X-Amz-Secret=***&passwd=***"),
        (f"mysql://root:p@ss/{PW}@db/x", "mysql://root:***@db/x"),  # unencoded @ and /
        (f"cannot open 'redis://:{PW}@h': refused", "cannot open 'redis://:***@h': refused"),
        ("grpc://10.0.0.5:13000", "grpc://10.0.0.5:13000"),
        ("http://user@host:5000/x", "http://user@host:5000/x"),  # a user name only: kept
        ("sqlite:////tmp/mlruns/mlflow.db", "sqlite:////tmp/mlruns/mlflow.db"),
        ("models:/digits@champion", "models:/digits@champion"),
    ],
)
def test_redact_hides_every_url_password_form(text: str, shown: str) -> None:
    out = redact(text)
    assert PW not in out and "p@ss" not in out
    assert shown in out


def test_redact_hides_several_urls_in_one_message_and_keeps_the_rest() -> None:
    text = f"a=postgresql://u:{PW}@h/db b=redis://:{PW}@r:6379 c=https://h/?key={PW} end"
    assert (
        redact(text) == "a=postgresql://u:***@h/db b=redis://:***@r:6379 c=https://h/?key=*** end"
    )


@pytest.fixture(scope="module")
def postgres_base() -> Iterator[str]:
    """A real PostgreSQL cluster (user protolab, password PW), or skip where there is none."""
    root = Path(tempfile.mkdtemp(prefix="protolab-pg-"))
    root.chmod(0o755)  # the server runs as the postgres user and must reach its cluster
    try:
        gen = _servers.postgres(root / "cluster", password=PW, databases=("second",))
        try:
            url = next(gen)
        except (RuntimeError, subprocess.CalledProcessError) as e:
            pytest.skip(f"no PostgreSQL server here: {e}")
        yield url
        next(gen, None)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _all_mlflow_text(tracking: str, dest: Path) -> str:
    """Every param, tag and artifact (downloaded) of every run in the store, as one text."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking)
    texts: list[str] = []
    for exp in client.search_experiments():
        texts += [f"{k}={v}" for k, v in exp.tags.items()]
        for run in client.search_runs([exp.experiment_id]):
            texts += [f"{k}={v}" for k, v in {**run.data.params, **run.data.tags}.items()]
            if not client.list_artifacts(run.info.run_id):
                continue
            local = Path(
                client.download_artifacts(run.info.run_id, "", str(dest / run.info.run_id))
            )
            texts += [p.read_text(errors="ignore") for p in local.rglob("*") if p.is_file()]
    assert len(texts) > 20, texts  # the sweep logged params, tags and artifacts
    return "\n".join(texts)


@pytest.mark.slow
@pytest.mark.parametrize("form", ["empty-user", "query"])
def test_a_sweep_on_postgres_prints_logs_and_uploads_no_password(
    tmp_path: Path, postgres_base: str, form: str
) -> None:
    """The two URL forms the old redaction missed, on a real store: the password reaches no
    output channel (terminal, params, tags, artifacts, report.json, ls)."""
    host = postgres_base.split("@", 1)[1].rsplit("/", 1)[0]  # 127.0.0.1:PORT
    db = {"empty-user": "protolab", "query": "second"}[form]
    storage = {
        "empty-user": f"postgresql://:{PW}@{host}/{db}?user=protolab",
        "query": f"postgresql://protolab@{host}/{db}?sslmode=disable&password={PW}",
    }[form]
    (tmp_path / "exp.py").write_text(textwrap.dedent(TINY_MLP))
    (tmp_path / "cfg.yaml").write_text(
        textwrap.dedent(f"""\
        experiment: exp.py
        backends: [lightning]
        study: {{name: tiny, n_trials: 2, sampler: random, pruner: none, storage: '{storage}'}}
        train: {{epochs: 1, batch_size: 128}}
        hardware: {{accelerator: cpu}}
        """)
    )
    outputs = []
    done = cli("sweep", "cfg.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    outputs += [done.stdout, done.stderr]
    assert "2 complete" in done.stdout or "t1" in done.stdout, done.stdout
    done = cli("report", "cfg.yaml", "--out", "rep", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    outputs += [done.stdout, done.stderr]
    files = [p for p in (tmp_path / "rep").rglob("*") if p.is_file()]
    assert any(p.name == "report.json" for p in files), files
    outputs += [
        p.read_text(errors="ignore") for p in files if p.suffix in (".json", ".md", ".html")
    ]
    done = cli("ls", "--storage", storage, cwd=tmp_path)
    outputs += [done.stdout, done.stderr]
    assert "tiny" in done.stdout, done.stdout + done.stderr
    tracking = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    outputs.append(_all_mlflow_text(tracking, tmp_path / "dl"))
    everything = "\n".join(outputs)
    assert PW not in everything
    assert "***" in everything  # redacted where it was shown, not dropped


# --- the trust boundary: an MLflow model that runs code on load ---------------------------

EVIL_PYFUNC = """\
import sys
from pathlib import Path

import mlflow
import mlflow.pyfunc
import numpy as np
from mlflow.tracking import MlflowClient

MARKER = sys.argv[2]


class Evil(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        Path(MARKER).write_text("code ran on load")

    def predict(self, context, model_input, params=None):
        return np.zeros((len(model_input), 10), np.float32)


mlflow.set_tracking_uri(sys.argv[1])
mlflow.set_experiment("shared")
with mlflow.start_run() as run:
    info = mlflow.pyfunc.log_model(name="model", python_model=Evil())
client = MlflowClient()
version = mlflow.register_model(info.model_uri, "digits")
client.set_registered_model_alias("digits", "champion", version.version)
Path(MARKER).unlink(missing_ok=True)  # log_model loaded it once to check it
print(run.info.run_id)
"""


@pytest.mark.slow
def test_a_registered_pyfunc_model_runs_only_with_trust(tmp_path: Path) -> None:
    """An attacker with write access registers a pyfunc model that runs code when loaded
    and moves the champion alias onto it: predict refuses it unless trusted."""
    store = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    (tmp_path / "mlruns").mkdir()
    marker = tmp_path / "PWNED"
    (tmp_path / "evil.py").write_text(EVIL_PYFUNC)
    made = subprocess.run(
        [sys.executable, "evil.py", store, str(marker)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert made.returncode == 0, made.stderr[-3000:]
    run_id = made.stdout.split()[-1]
    assert not marker.exists()
    np.savez(tmp_path / "x.npz", x=np.zeros((3, 8, 8, 1), np.float32))
    for uri in ("models:/digits@champion", "models:/digits/1", f"runs:/{run_id}/model"):
        done = cli("predict", uri, "x.npz", "--uri", store, cwd=tmp_path)
        one_line_exit_2(done, "MODEL_OR_RUN", uri, "runs code", "--trust")
        assert not marker.exists(), f"{uri} ran the model's code without --trust"
    done = cli(
        "predict", "models:/digits@champion", "x.npz", "--uri", store, "--trust", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert marker.exists() and "3 samples" in done.stdout
    marker.unlink()
    trusted = {"PROTOLAB_TRUST": "1"}
    done = cli("predict", "models:/digits/1", "x.npz", "--uri", store, cwd=tmp_path, env=trusted)
    assert done.returncode == 0 and marker.exists(), done.stderr[-3000:]


# --- a real study: exports, a hub folder, a pt2 program, tampered weights, store tags ------


@pytest.fixture(scope="module")
def study() -> Iterator[Path]:
    """A one-trial sweep (lightning) with its kept checkpoint, in a folder of its own."""
    root = Path(tempfile.mkdtemp(prefix="protolab-sec-"))
    (root / "exp.py").write_text(textwrap.dedent(TINY_MLP))
    (root / "cfg.yaml").write_text(
        textwrap.dedent("""\
        experiment: exp.py
        backends: [lightning]
        study: {name: tiny, n_trials: 1, sampler: random, pruner: none}
        train: {epochs: 1, batch_size: 128}
        hardware: {accelerator: cpu}
        """)
    )
    done = cli("sweep", "cfg.yaml", cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    from protolab.data import load_dataset

    ds = load_dataset("digits")
    np.savez(root / "val.npz", x=ds.x_val, y=ds.y_val)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _export(study: Path, fmt: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return cli("export", "tiny", "--format", fmt, "--out", str(out), *extra, cwd=study)


@pytest.mark.slow
def test_a_hub_folder_is_read_as_data_and_its_hubconf_runs_only_with_trust(
    study: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "hub"
    assert _export(study, "hub", folder).returncode == 0
    marker = tmp_path / "PWNED"
    hubconf = folder / "hubconf.py"
    hubconf.write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n" + hubconf.read_text()
    )
    done = cli("predict", str(folder), str(study / "val.npz"), cwd=tmp_path)
    assert done.returncode == 0 and "accuracy" in done.stdout, done.stderr[-3000:]
    assert not marker.exists(), "predict imported hubconf.py without --trust"
    done = cli("predict", str(folder), str(study / "val.npz"), "--trust", cwd=tmp_path)
    assert done.returncode == 0 and marker.exists(), done.stderr[-3000:]


@pytest.mark.slow
def test_a_pt2_program_is_refused_untrusted_and_runs_trusted(study: Path, tmp_path: Path) -> None:
    folder = tmp_path / "pt2"
    done = _export(study, "pt2", folder)
    assert done.returncode == 0, done.stderr[-3000:]
    val = str(study / "val.npz")
    one_line_exit_2(cli("predict", str(folder), val, cwd=tmp_path), "pt2", "unpickles", "--trust")
    done = cli("predict", str(folder), val, "--trust", cwd=tmp_path)
    assert done.returncode == 0 and "accuracy" in done.stdout, done.stderr[-3000:]


class _Payload:
    """A pickle that runs a command when loaded (what a tampered weights.pt carries)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.slow
def test_tampered_weights_are_refused_in_one_line(study: Path, tmp_path: Path) -> None:
    import torch

    folder = tmp_path / "hub"
    assert _export(study, "hub", folder).returncode == 0
    val = str(study / "val.npz")
    marker = tmp_path / "PWNED"
    weights = folder / "weights.pt"
    good = torch.load(weights, weights_only=True)
    with weights.open("wb") as f:  # a pickle with code in it
        pickle.dump(_Payload(marker), f)
    one_line_exit_2(cli("predict", str(folder), val, cwd=tmp_path), "weights.pt", "refused")
    assert not marker.exists()
    torch.save({k: v[..., :1] if v.dim() else v for k, v in good.items()}, weights)  # shapes
    one_line_exit_2(cli("predict", str(folder), val, cwd=tmp_path), "weights.pt", "refused")
    weights.write_bytes(b"\x00garbage")  # not even a file torch reads
    one_line_exit_2(cli("predict", str(folder), val, cwd=tmp_path), "weights.pt", "refused")


def _copy_store(study: Path, dest: Path) -> str:
    """The study's MLflow store copied (its artifacts stay where the copy's URIs point)."""
    dest.mkdir()
    shutil.copy(study / "mlruns" / "mlflow.db", dest / "mlflow.db")
    return f"sqlite:///{dest / 'mlflow.db'}"


@pytest.mark.slow
@pytest.mark.parametrize("evil", ["/tmp/protolab-evil-abs", "../../evil", "a/../../b", "x/y"])
def test_a_study_tag_never_names_a_folder_outside_exports(
    study: Path, tmp_path: Path, evil: str
) -> None:
    """An attacker edits the experiment's protolab.study tag; the user exports as usual."""
    from mlflow.tracking import MlflowClient

    store = _copy_store(study, tmp_path / "store")
    client = MlflowClient(store)
    exp = client.get_experiment_by_name("tiny")
    assert exp is not None
    client.set_experiment_tag(exp.experiment_id, "protolab.study", evil)
    for run in client.search_runs([exp.experiment_id]):
        client.set_tag(run.info.run_id, "protolab.study", evil)
    work = tmp_path / "work"
    work.mkdir()
    done = cli("export", "tiny", "--format", "onnx", "--uri", store, cwd=work)
    one_line_exit_2(done, "tag protolab.study", repr(evil), "refused")
    assert list(work.iterdir()) == [] and not Path("/tmp/protolab-evil-abs").exists()
    assert not (tmp_path / "evil").exists() and not (tmp_path / "b").exists()


@pytest.mark.slow
def test_export_out_into_a_foreign_non_empty_folder_needs_force(
    study: Path, tmp_path: Path
) -> None:
    mine = tmp_path / "project"
    mine.mkdir()
    (mine / "hubconf.py").write_text("# my own file\n")
    (mine / "notes.txt").write_text("keep me\n")
    done = _export(study, "hub", mine)
    one_line_exit_2(done, "--out", str(mine), "not empty", "--force")
    assert (mine / "hubconf.py").read_text() == "# my own file\n"
    assert sorted(p.name for p in mine.iterdir()) == ["hubconf.py", "notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _export(study, "hub", empty).returncode == 0  # empty: fine
    assert _export(study, "hub", empty).returncode == 0  # its own export again: fine
    done = _export(study, "hub", mine, "--force")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (mine / "notes.txt").exists() and "protolab" in (mine / "hubconf.py").read_text()


# --- exposure -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "local"),
    [("127.0.0.1", True), ("127.0.1.1", True), ("::1", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("", False), ("192.0.2.7", False)],
)  # fmt: skip
def test_loopback_hosts_are_told_from_exposed_ones(host: str, local: bool) -> None:
    assert is_loopback(host) is local


def _start(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full = {**os.environ, **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "protolab.cli", *args],
        cwd=cwd,
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """Stop a server this test started (its own session: the process and its children)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        return proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.communicate(timeout=30)


def _wait_for(path: Path, text: str, proc: subprocess.Popen[str], seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = path.read_text(errors="ignore") if path.exists() else ""
        if text in got or proc.poll() is not None:
            return got
        time.sleep(0.3)
    return path.read_text(errors="ignore") if path.exists() else ""


@pytest.mark.slow
def test_a_proxy_on_all_interfaces_warns_and_names_a_reachable_address(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    import optuna

    optuna.storages.RDBStorage(storage)  # the tables exist, as for a real study database
    port = _servers.free_port()
    log = tmp_path / "proxy.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "protolab.cli", "storage-proxy", storage, "--host", "0.0.0.0",
             "--port", str(port)],
            cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )  # fmt: skip
        try:
            text = _wait_for(log, "workers use it with", proc, 120)
        finally:
            _stop(proc)
    assert "workers use it with: study.storage=grpc://" in text, text
    told = text.split("study.storage=grpc://", 1)[1].split()[0]
    assert not told.startswith(("0.0.0.0", "[::]")), told
    warning = " ".join(text.split())
    assert "warning: --host 0.0.0.0" in warning and "no login" in warning, warning
    assert "read, change and delete every study" in warning and "firewall" in warning


@pytest.mark.slow
def test_ui_on_all_interfaces_warns_what_it_exposes(tmp_path: Path) -> None:
    (tmp_path / "mlruns").mkdir()
    import mlflow

    mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}").create_experiment("x")
    proc = _start(["ui", "--host", "0.0.0.0", "--port", str(_servers.free_port())], tmp_path)
    try:
        deadline = time.monotonic() + 120
        err = ""
        assert proc.stderr is not None
        while time.monotonic() < deadline and "To protect it" not in err:
            line = proc.stderr.readline()
            if not line:
                break
            err += line
    finally:
        _stop(proc)
    warning = " ".join(err.split())
    assert "warning: --host 0.0.0.0" in warning, err
    assert "read, change and delete every run and study" in warning and "ssh -L" in warning


@pytest.mark.slow
def test_server_auth_turns_on_mlflow_basic_auth(tmp_path: Path) -> None:
    """`server --auth` on every interface: warned about, and a request without a login is 401."""
    store = f"sqlite:///{tmp_path / 'server.db'}"
    port = _servers.free_port()
    args = ["server", "--backend-store-uri", store, "--artifacts", "art", "--auth"]
    done = cli(*args, "--port", str(port), cwd=tmp_path)  # no admin password for a first start
    one_line_exit_2(done, "--auth", "MLFLOW_AUTH_ADMIN_PASSWORD")
    env = {"MLFLOW_AUTH_ADMIN_PASSWORD": "Adm1n-pass-word!"}
    proc = _start([*args, "--host", "0.0.0.0", "--port", str(port)], tmp_path, env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2).read()
                break
            except OSError:
                time.sleep(0.5)
        search = f"{base}/api/2.0/mlflow/experiments/search?max_results=1"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(search, timeout=10)
        assert refused.value.code == 401
        import base64

        login = base64.b64encode(b"admin:" + env["MLFLOW_AUTH_ADMIN_PASSWORD"].encode()).decode()
        request = urllib.request.Request(search, headers={"Authorization": f"Basic {login}"})
        with urllib.request.urlopen(request, timeout=10) as r:
            assert r.status == 200
    finally:
        err = _stop(proc)[1]
    warning = " ".join(err.split())
    assert "warning: --host 0.0.0.0" in warning and "basic auth" in warning and "TLS" in warning


def _listening(port: int) -> list[str]:
    """The local addresses listening on ``port`` (from /proc/net/tcp and tcp6)."""
    found = []
    for name in ("tcp", "tcp6"):
        path = Path("/proc/net") / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hexport = local.rsplit(":", 1)
            if state == "0A" and int(hexport, 16) == port:
                found.append(addr)
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads /proc/net/tcp (Linux)")
def test_ddp_store_listens_on_master_addr_only(tmp_path: Path) -> None:
    """torch's TCPStore server binds every interface; protolab's rank 0 binds MASTER_ADDR."""
    port = _servers.free_port()
    script = textwrap.dedent(f"""\
        import os, sys, json
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
        from tests.test_security import _listening
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="{port}")
        from protolab.backends.torch._ddp import host_store
        host_store()
        import torch.distributed as dist
        client = dist.TCPStore("127.0.0.1", {port}, is_master=False)
        client.set("k", "v")
        print(json.dumps(_listening({port})))
        """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    addresses = json.loads(done.stdout.strip().splitlines()[-1])
    assert addresses == ["0100007F"], addresses  # 127.0.0.1, and nothing else
