"""``protolab init`` (every template sweeps as written), ``protolab ls``, shell completion."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from protolab.commands._templates import TEMPLATES
from tests.test_ui import make_study

PROTOLAB = Path(sys.executable).with_name("protolab")  # the console script (completion's name)


def _cli(
    *args: str, cwd: Path, timeout: float = 900, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PROTOLAB), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_init_writes_a_script_and_a_config(tmp_path: Path) -> None:
    r = _cli("init", "my-study", "--template", "cnn", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    script = tmp_path / "experiments" / "my_study.py"
    config = tmp_path / "configs" / "my-study.yaml"
    assert "Conv2D" in script.read_text()
    text = config.read_text()
    assert "experiment: ../experiments/my_study.py" in text and "name: my-study" in text
    assert "backends: [dynamic, static]" in text
    assert "protolab sweep configs/my-study.yaml" in r.stdout
    compile(script.read_text(), str(script), "exec")  # valid Python as written


def test_init_refuses_to_overwrite_and_bad_input_is_exit_2(tmp_path: Path) -> None:
    assert _cli("init", "s", cwd=tmp_path).returncode == 0
    (tmp_path / "experiments" / "s.py").write_text("# mine\n")
    r = _cli("init", "s", cwd=tmp_path)
    assert r.returncode == 2 and "already exists" in r.stderr and "--force" in r.stderr
    assert (tmp_path / "experiments" / "s.py").read_text() == "# mine\n"
    assert _cli("init", "s", "--force", cwd=tmp_path).returncode == 0
    assert "Dense" in (tmp_path / "experiments" / "s.py").read_text()
    for args in (("init", "9bad"), ("init", "a/b"), ("init", "ok", "--template", "rnn")):
        r = _cli(*args, cwd=tmp_path)
        assert r.returncode == 2, (args, r.stderr)
        assert "Traceback" not in r.stderr and "allowed" in r.stderr


def test_ls_without_stores_says_so(tmp_path: Path) -> None:
    r = _cli("ls", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "no study yet" in r.stdout
    assert not (tmp_path / "mlruns").exists()


def test_ls_lists_a_study_known_to_mlflow_only(tmp_path: Path) -> None:
    make_study(tmp_path, "only-mlflow")
    r = _cli("ls", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    row = next(line for line in r.stdout.splitlines() if line.startswith("only-mlflow"))
    assert row.split()[1:4] == ["3", "0", "0"], row
    assert "val/acc" in row and ("just now" in row or "min ago" in row), row


def test_shell_completion_completes_commands_and_options(tmp_path: Path) -> None:
    env = {"_PROTOLAB_COMPLETE": "complete_bash", "COMP_WORDS": "protolab l", "COMP_CWORD": "1"}
    r = _cli(cwd=tmp_path, env=env)
    assert set(r.stdout.split()) == {"lineage", "ls"}, r.stdout + r.stderr
    env.update(COMP_WORDS="protolab ui --st", COMP_CWORD="2")
    assert _cli(cwd=tmp_path, env=env).stdout.split() == ["--study"]
    r = _cli(cwd=tmp_path, env={"_PROTOLAB_COMPLETE": "source_bash"})
    assert "complete -o default -F _protolab_completion protolab" in r.stdout


# The first template sweeps exactly as written: `backends: [dynamic, static]`, so each family's
# calibration runs too. The others share that config line and differ in their script, so they
# sweep one mode of each framework: the calibration's ~1-2 min of XLA compiles is paid once.
CALIBRATED = TEMPLATES[0]


@pytest.mark.slow
@pytest.mark.parametrize("template", TEMPLATES)
def test_each_template_sweeps_and_ls_lists_it(tmp_path: Path, template: str) -> None:
    name = f"new-{template}"
    assert _cli("init", name, "--template", template, cwd=tmp_path).returncode == 0
    modes = [] if template == CALIBRATED else ["backends=[lightning,tf-graph]"]
    r = _cli(
        "sweep", f"configs/{name}.yaml", "study.n_trials=1", "train.epochs=1", *modes, cwd=tmp_path
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 complete" in r.stdout, r.stdout
    r = _cli("ls", cwd=tmp_path)
    row = next(line for line in r.stdout.splitlines() if line.startswith(name))
    assert row.split()[1:4] == ["1", "0", "0"], r.stdout
