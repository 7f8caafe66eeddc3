"""Write requirements.lock: the exact versions of mafl's dependencies (with the `dev` extra) in this environment.

    MAFL_UNLOCKED=1 bash .ci/setup dev      # resolve the newest versions allowed by pyproject.toml
    .venv/bin/python -m pytest              # test them
    .venv/bin/python .ci/lock.py            # and pin them: requirements.lock

Only the packages that mafl[dev] needs, followed through their own requirements (as this environment's markers
select them), are pinned, whatever else the environment holds. `.ci/setup` installs with the lock as pip
constraints. CUDA packages are never pinned (torch is the CPU build here; a GPU machine brings its own), and torch
is pinned without its local label (`2.13.0`, not `2.13.0+cpu`).
"""
from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = ("dev",)
NEVER = re.compile(r"^(nvidia-|triton$|cuda-|pytorch-triton)")  # GPU stacks: several GB, machine-specific


def closure(root: str, extras: tuple[str, ...]) -> dict[str, str]:
    """{canonical name: installed version} of ``root`` and everything it requires, recursively."""
    found: dict[str, str] = {}
    seen: set[tuple[str, tuple[str, ...]]] = set()
    todo = [(root, extras)]
    while todo:
        name, wanted = todo.pop()
        if (canonicalize_name(name), wanted) in seen:
            continue
        seen.add((canonicalize_name(name), wanted))
        dist = metadata.distribution(name)
        for line in dist.requires or []:
            req = Requirement(line)
            envs = [{"extra": e} for e in wanted] or [{"extra": ""}]
            if req.marker is not None and not any(req.marker.evaluate(env) for env in envs):
                continue
            key = canonicalize_name(req.name)
            if NEVER.match(key):
                continue
            try:
                version = metadata.version(req.name)
            except metadata.PackageNotFoundError:
                sys.exit(f"lock: {req.name} (required by {name}) is not installed; run .ci/setup dev first")
            found[key] = version
            todo.append((req.name, tuple(sorted(req.extras))))
    return found


def main() -> None:
    pins = closure("mafl", EXTRAS)
    pins.pop("mafl", None)
    lines = [
        "# The tested versions of mafl's dependencies (mafl[dev]), installed by .ci/setup as pip constraints:",
        "#   pip install torch==2.13.0 && pip install -c requirements.lock -e '.[dev]'",
        f"# Python {sys.version_info.major}.{sys.version_info.minor}; regenerate with .ci/lock.py (see its docstring).",
    ]
    lines += [f"{name}=={version.split('+')[0]}" for name, version in sorted(pins.items())]
    (ROOT / "requirements.lock").write_text("\n".join(lines) + "\n")
    print(f"requirements.lock: {len(pins)} packages")


if __name__ == "__main__":
    main()
