"""`import protolab` and `protolab --help` must not load any heavy framework (DESIGN §8)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("torch", "tensorflow", "keras", "jax", "lightning", "mlflow", "optuna", "watchfiles")

PROBE = """
import sys
{code}
print("LOADED:" + " ".join(m for m in {heavy!r} if m in sys.modules))
"""


def _loaded_after(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(code=code, heavy=HEAVY)],
        capture_output=True,
        text=True,
        check=True,
    )
    (line,) = [x for x in out.stdout.splitlines() if x.startswith("LOADED:")]
    return line.removeprefix("LOADED:").strip()


def test_import_protolab_loads_no_framework() -> None:
    assert _loaded_after("import protolab; from protolab import layers, Arch, Space") == ""


def test_cli_help_loads_no_framework() -> None:
    code = "from protolab.cli import app\ntry:\n    app(['--help'])\nexcept SystemExit:\n    pass"
    assert _loaded_after(code) == ""


def test_config_error_path_loads_no_framework(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "c.yaml"
    cfg.write_text("experiment: nowhere.py\n")
    code = (
        "from protolab.cli import app\n"
        f"try:\n    app(['sweep', {str(cfg)!r}])\nexcept SystemExit:\n    pass"
    )
    assert _loaded_after(code) == ""


def test_cli_entry_point_help_and_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "protolab.cli", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0
    assert out.stdout.startswith("protolab ")
    help_out = subprocess.run(
        [sys.executable, "-m", "protolab.cli", "--help"], capture_output=True, text=True
    )
    assert help_out.returncode == 0
    for command in ("sweep", "run", "ui"):
        assert command in help_out.stdout
