"""A mode that trains in a worker process of its own imports there while this process
imports the others, and no job starts before that import is done (a job timed beside a
framework's import shares the cores with it)."""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from protolab.backends import get_backend, load_backends, register_backend

SLOW_LOAD = '''
import os
import time
from pathlib import Path

from protolab.backends import Backend


class SlowLoad(Backend):
    """Loads in a worker process of its own (``process_env``), slowly."""

    name = "slow-load"
    family = "static"
    process_env = {"SLOW_LOAD_WORKER": "1"}

    def load(self):
        time.sleep(1.0)  # an import that takes a while
        Path(os.environ["SLOW_LOAD_MARK"]).write_text(os.environ.get("SLOW_LOAD_WORKER", ""))

    def program(self, job):
        raise NotImplementedError
'''


@pytest.fixture
def slow_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    (tmp_path / "slow_load_plugin.py").write_text(textwrap.dedent(SLOW_LOAD))
    monkeypatch.syspath_prepend(str(tmp_path))
    path = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    monkeypatch.setenv("PYTHONPATH", path)  # the worker process imports it too
    mark = tmp_path / "loaded"
    monkeypatch.setenv("SLOW_LOAD_MARK", str(mark))
    register_backend("slow-load", "slow_load_plugin:SlowLoad")
    yield mark
    get_backend("slow-load").close()
    sys.modules.pop("slow_load_plugin", None)


def test_load_backends_returns_once_the_worker_has_imported(slow_load: Path) -> None:
    backend = get_backend("slow-load")
    assert backend.loads_elsewhere  # a proxy: the class asks for a process of its own
    load_backends(["slow-load"])
    # written by the worker (its environment has the class's process_env), before the return
    assert slow_load.read_text() == "1"
