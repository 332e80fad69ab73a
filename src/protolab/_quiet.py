"""TensorFlow's C++ start-up lines, kept off the terminal: its import runs with stderr filtered.

TensorFlow (2.21) logs its oneDNN notice through absl before absl's logging is initialised,
and such lines go straight to file descriptor 2 whatever ``TF_CPP_MIN_LOG_LEVEL`` says
(measured: levels 1, 2 and 3 all print ``WARNING: All log messages before
absl::InitializeLog() is called are written to STDERR`` and ``port.cc:153] oneDNN custom
operations are on...``, twice per import). ``TF_ENABLE_ONEDNN_OPTS=0`` silences the notice
only by turning the oneDNN kernels off, which changes what is measured.

So :func:`quiet_tensorflow_import` (called by the CLI before any framework loads) sets
``TF_CPP_MIN_LOG_LEVEL`` (the C++ lines that honour it: ``cpu_feature_guard`` and later
ones) and puts a finder on ``sys.meta_path`` that wraps the one import of the ``tensorflow``
package, wherever it happens (a backend, Keras, a user's script): while it executes, fd 2
is a pipe read by a thread that forwards every line except the start-up notices, as they
come, so a live display or a real error still shows. Nothing is imported here: naming the
package costs nothing until something imports it.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import re
import sys
import threading
from collections.abc import Iterator, Sequence
from types import ModuleType

__all__ = ["NOTICE", "filtered_stderr", "quiet_tensorflow_import"]

_PACKAGE = "tensorflow"
# The start-up notices: absl's pre-initialisation warning, the oneDNN notice (port.cc),
# the CPU-instructions notice (cpu_feature_guard.cc) and its second line.
NOTICE = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|[IW]\d{4} [\d:.]+ +\d+ (port|cpu_feature_guard)\.cc:\d+\]"
    rb"|To enable the following instructions: .* rebuild TensorFlow)"
)
# A line that starts like one of the notices is held back until it is complete.
_PREFIXES = (b"WARNING: All log", b"I0", b"W0", b"To enable the following")


def _could_be_notice(partial: bytes) -> bool:
    return any(p.startswith(partial) or partial.startswith(p) for p in _PREFIXES)


def _forward(read_fd: int, out_fd: int) -> None:
    """Copy ``read_fd`` to ``out_fd`` until EOF, dropping whole lines that match NOTICE."""
    pending = b""
    while chunk := os.read(read_fd, 65536):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        kept = b"".join(line + b"\n" for line in lines if not NOTICE.match(line))
        if pending and not _could_be_notice(pending):  # a partial line (a live display)
            kept, pending = kept + pending, b""
        if kept:
            os.write(out_fd, kept)
    if pending and not NOTICE.match(pending):
        os.write(out_fd, pending)
    os.close(read_fd)
    os.close(out_fd)  # its own copy of the real stderr


@contextlib.contextmanager
def filtered_stderr() -> Iterator[None]:
    """Within the block, file descriptor 2 drops TensorFlow's start-up notices."""
    with contextlib.suppress(ValueError, OSError):  # a closed or detached sys.stderr
        sys.stderr.flush()
    saved = os.dup(2)
    read_fd, write_fd = os.pipe()
    thread = threading.Thread(target=_forward, args=(read_fd, os.dup(saved)), daemon=True)
    thread.start()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError, OSError):
            sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last writer closes: the thread sees EOF
        os.close(saved)
        # A process started meanwhile may hold the pipe: the thread then forwards its
        # lines for as long as it lives; the import's own lines are through by now.
        thread.join(timeout=5)


class _QuietLoader(importlib.abc.Loader):
    """The package's own loader, its module executed with stderr filtered."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = self._loader  # resources and reloads see the real loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _QuietFinder)]
        with filtered_stderr():
            self._loader.exec_module(module)


class _QuietFinder(importlib.abc.MetaPathFinder):
    """Finds the package with the finders after it and wraps the loader of what they find.

    It stays in place until the package executes: a library that only asks whether the
    package is installed (``importlib.util.find_spec``) gets the wrapped spec too, unused.
    """

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != _PACKAGE:
            return None
        after = sys.meta_path[sys.meta_path.index(self) + 1 :] if self in sys.meta_path else []
        for finder in after:
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find is not None else None
            if spec is not None:
                if spec.loader is not None and not isinstance(spec.loader, _QuietLoader):
                    spec.loader = _QuietLoader(spec.loader)
                return spec
        return None


def quiet_tensorflow_import() -> None:
    """Set TensorFlow's log level (unless set) and filter its import's start-up notices.

    Does nothing to an environment that asked for TensorFlow's logs
    (``TF_CPP_MIN_LOG_LEVEL=0``), or when the package is already imported.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0" or _PACKAGE in sys.modules:
        return
    if not any(isinstance(f, _QuietFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietFinder())
