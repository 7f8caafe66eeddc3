"""mafl as a user installs it: a built wheel in a fresh venv, run from a folder outside the repository; and the lock
file of tested versions that .ci/setup installs from."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import REPO


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the package's sources (the checkout gets no build/ or egg-info), with this
    environment's setuptools (a dev dependency) instead of a downloaded one."""
    src = tmp_path_factory.mktemp("src")
    shutil.copytree(REPO / "mafl", src / "mafl", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    out = tmp_path_factory.mktemp("dist")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(out),
                            str(src)], capture_output=True, text=True)
    assert build.returncode == 0, build.stdout + build.stderr
    assert "as a TOML table is deprecated" not in build.stderr  # the license is an SPDX expression
    (whl,) = out.glob("mafl-*.whl")
    return whl


def test_the_wheel_holds_the_config_tree_and_everything_the_library_reads(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    repo_conf = {str(p.relative_to(REPO)) for p in (REPO / "mafl" / "conf").rglob("*.yaml")}
    assert repo_conf and repo_conf <= names
    assert "mafl/conf/config.yaml" in names and "mafl/conf/dataset/arithmetic.yaml" in names  # the tiny corpus
    assert "mafl/tasks/verify_worker.py" in names  # run as a script by the grading sandbox
    # the default tiny model ships: its folder whole (one weights file), and the weights mafl records
    from mafl.tiny.shipped import SHIPPED

    for shipped in SHIPPED.values():
        folder = {str(p.relative_to(REPO)) for p in shipped.path.iterdir()}
        assert f"mafl/tiny/shipped_model/{shipped.folder}/model.safetensors" in folder and folder <= names
        weights = zipfile.ZipFile(wheel).read(f"mafl/tiny/shipped_model/{shipped.folder}/model.safetensors")
        assert hashlib.sha256(weights).hexdigest() == shipped.weights_sha256
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert re.search(r"^License-Expression: MIT$", metadata, re.M)


def test_the_installed_wheel_runs_from_another_folder(wheel, tiny_model_dir, tmp_path):
    """`pip install mafl-*.whl` into a fresh venv, then `mafl debug=smoke` in an empty folder: it finishes and writes
    its results under that folder. The venv sees this environment's dependencies through a .pth file (no
    download); .pth files in that folder are not processed, so the editable mafl of this checkout cannot shadow
    the wheel's."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "_mafl_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True)

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(MAFL_HOME=str(tmp_path / "home"), WANDB_MODE="disabled", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    where = subprocess.run([str(python), "-c", "import mafl; print(mafl.__file__)"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(site), f"mafl imported from {where}, not from the wheel in {site}"
    # the default tiny model comes from the wheel's own files, hash-checked, with no pretraining
    load = ("import mafl.tiny.pretrain as p; from mafl.tiny import ensure_tiny_model, read_recipe; "
            "from mafl.tiny.shipped import SHIPPED; from transformers import AutoModelForCausalLM; "
            "p.pretrain = None; (key, shipped), = SHIPPED.items(); "
            "path = ensure_tiny_model(read_recipe(shipped.path)['recipe'], progress=False); "
            "AutoModelForCausalLM.from_pretrained(path); print(path, shipped.path, read_recipe(path)['source'])")
    loaded = subprocess.run([str(python), "-c", load], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    cached, source, how = loaded.stdout.split()
    assert Path(cached).is_relative_to(tmp_path / "home") and Path(source).is_relative_to(site) and how == "shipped"

    work = tmp_path / "elsewhere"
    work.mkdir()
    proc = subprocess.run([str(venv / "bin" / "mafl"), "debug=smoke", f"model.path={tiny_model_dir}",
                           "dataset.n_train=6", "dataset.n_eval=4", "debate.max_new_tokens=16",
                           "metrics.diversity_problems=2"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (results,) = work.glob("runs/*/results.json")
    data = json.loads(results.read_text())
    assert data["config"]["method"]["name"] == "multiagent_ft"
    assert {r["iteration"] for r in data["records"]} == {0, 1}
    assert (results.parent / "iter_1" / "models" / "generator_0" / "adapter_config.json").exists()


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name), line
            assert re.fullmatch(r"[0-9][0-9A-Za-z.]*", version), line
            pins[canonicalize_name(name)] = version
    return pins


def test_the_lock_pins_every_dependency_and_no_gpu_stack():
    tomllib = pytest.importorskip("tomllib")
    pins = lock_pins()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for line in project["dependencies"] + project["optional-dependencies"]["dev"]:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name in pins, f"{name} is not in requirements.lock"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} breaks {line!r}"
    assert pins["torch"] == "2.13.0"  # the CPU build that .ci/setup installs first; no local label
    assert not [n for n in pins if re.match(r"nvidia-|triton|cuda-", n)]
    setup = (REPO / ".ci" / "setup").read_text()
    assert '"torch==2.13.0"' in setup and "-c requirements.lock" in setup
    assert setup.index('"torch==2.13.0"') < setup.index("-c requirements.lock")
