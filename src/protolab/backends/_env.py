"""Environment capture for every run: versions, device, threads, the experiment's git state."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from functools import cache
from pathlib import Path

__all__ = ["environment_tags", "git_state", "package_versions"]

_PACKAGES = (
    "protolab",
    "torch",
    "lightning",
    "tensorflow-cpu",
    "tensorflow",
    "keras",
    "optuna",
    "mlflow",
    "numpy",
    "scikit-learn",
)


@cache
def package_versions() -> dict[str, str]:
    """Python, platform and the installed versions of the packages a measurement depends on."""
    out = {"python": platform.python_version(), "platform": platform.platform(terse=True)}
    for name in _PACKAGES:
        try:
            out[name.removesuffix("-cpu")] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


@cache
def git_state(folder: Path) -> dict[str, str]:
    """Commit and dirty flag of the git repo holding ``folder``, if any (cached per folder)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=folder, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"git_commit": commit, "git_dirty": str(dirty).lower()}


def environment_tags(script: Path | None = None) -> dict[str, str]:
    """``env.*`` tags: package versions and (when the script is in a repo) its git state."""
    tags = {f"env.{k}": v for k, v in package_versions().items()}
    if script is not None:
        tags.update({f"env.{k}": v for k, v in git_state(script.parent).items()})
    return tags
