"""A task whose answer any text has: ``even`` or ``odd``, the parity of its number of words. A random model's
completions then earn reward 1 about half the time, so a GRPO group has reward variance and a step has something to
learn, which the arithmetic answers of a random model never give. Importable by name (``parity_task:ParityTask``) in
a subprocess whose PYTHONPATH holds tests/."""
from __future__ import annotations

from mafl.tasks.base import Task


class ParityTask(Task):
    name = "parity"

    def extract_answer(self, response):
        words = response.split() if response else []
        return ("even", "odd")[len(words) % 2] if words else None

    def is_equivalent(self, pred, gold):
        return pred is not None and gold is not None and pred.strip() == gold.strip()

    def gold_answer(self, row):
        return str(row["answer"])
