"""Helpers shared by tests: composing the real config tree, and a scripted backend."""
from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from hydra import compose, initialize_config_dir

import mafl.cli  # noqa: F401  (registers the run-name resolver)
from mafl.backends.base import Completion, Score

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "mafl" / "conf"


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a ``python -m mafl`` subprocess: this checkout first on PYTHONPATH, so that the
    subprocess runs the code under test even from another folder, where another install of mafl would win."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


@contextlib.contextmanager
def one_torch_thread():
    """torch on one thread inside the block, as in a ``mafl serve`` or Ray worker process (OMP_NUM_THREADS=1): an
    in-process reference then has their float rounding, so that texts can be compared exactly."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def compose_cfg(overrides=(), return_hydra_config: bool = False):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=return_hydra_config)


class ScriptedBackend:
    """Answers every request with ``answer_fn(request)`` (a text, or a whole Completion, e.g. one cut off), and
    records what it was asked."""

    def __init__(self, answer_fn):
        self.answer_fn = answer_fn
        self.calls: list[list] = []
        self.loaded: dict[str, str] = {}

    def generate(self, requests):
        self.calls.append(list(requests))
        out = [self.answer_fn(r) for r in requests]
        return [c if isinstance(c, Completion) else Completion(text=c, num_tokens=5) for c in out]

    def score(self, requests):
        return [Score(logprob=-1.0 * (1 + len(r.response) % 3), num_tokens=3) for r in requests]

    def load_adapter(self, name, path):
        self.loaded[name] = path

    def unload(self, name):
        self.loaded.pop(name, None)

    def adapters(self):
        return sorted(self.loaded)

    def close(self):
        pass


def question_numbers(text: str) -> list[int]:
    m = re.search(r"What is the result of ([0-9+*\-]+)\?", text)
    return [int(x) for x in re.findall(r"\d+", m.group(1))] if m else []


# a task outside mafl's registry: one module, named by the config as dataset.task=<module>:CountingTask
COUNTING_TASK = '''
from mafl.tasks.base import Problem
from mafl.tasks.numeric import NumericTask


class CountingTask(NumericTask):
    """Generated problems: "How many letters in <word>?"."""

    name = "counting"

    def load_problems(self, cfg):
        words = ["a" * (i + 1) for i in range(cfg["n_train"] + cfg["n_eval"])]
        problems = [Problem(f"counting/{i}", f"How many letters in {w}?", str(len(w))) for i, w in enumerate(words)]
        return problems[cfg["n_eval"]:], problems[:cfg["n_eval"]]
'''


def train_checking_lora(trainer):
    """Train ``trainer`` (a trl trainer of a new LoRA adapter) and check what every such step must do: the base
    weights unchanged, some ``lora_B`` changed, and those began at 0 (a new adapter is the base model)."""
    import torch

    params = dict(trainer.model.named_parameters())
    before = {k: v.detach().clone() for k, v in params.items()}
    trainer.train()
    base_keys = [k for k in params if "lora_" not in k]
    assert base_keys and all(torch.equal(params[k], before[k]) for k in base_keys)
    changed = [k for k in params if "lora_B" in k and not torch.equal(params[k], before[k])]
    assert changed and all(before[k].abs().sum() == 0 for k in changed)
