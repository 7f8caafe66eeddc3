"""The usage ledger of a run that talks to an API (``usage.json`` in the run folder): requests, prompt and
completion tokens per stage (``iter_k/train``, ``iter_k/eval``, ``iter_k/metrics``) and model, and their cost
where a price table is configured (``backend.prices``: model -> ``{prompt, completion}`` in US dollars per
million tokens). A fine-tuned model ``ft:BASE:...`` without a price of its own takes the price of ``ft:BASE``.

The ledger is saved after every backend call, so a stopped run keeps what it spent; a resumed run adds to it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

from mafl.rundir import atomic_write_json

USAGE_FILE = "usage.json"
COUNTS = ("requests", "prompt_tokens", "completion_tokens")


def price_of(prices: Mapping[str, Mapping], served: str) -> Mapping | None:
    if served in prices:
        return prices[served]
    if served.startswith("ft:"):
        return prices.get(":".join(served.split(":")[:2]))
    return None


class UsageLedger:
    def __init__(self, prices: Mapping[str, Mapping] | None = None):
        self.prices = dict(prices or {})
        self.stage = "run"  # what the next requests belong to (set by the session)
        self.rows: dict[tuple[str, str, str], dict[str, int]] = {}  # (stage, model, served model) -> counts
        self.path: Path | None = None

    def attach(self, run_dir: Path | str) -> None:
        """Keep the ledger in ``run_dir/usage.json``, adding to what an earlier process of the run spent."""
        self.path = Path(run_dir) / USAGE_FILE
        if self.path.exists():
            for row in json.loads(self.path.read_text()).get("rows", []):
                key = (row["stage"], row["model"], row["served_model"])
                counts = self.rows.setdefault(key, dict.fromkeys(COUNTS, 0))
                for c in COUNTS:
                    counts[c] += int(row.get(c, 0))

    def add(self, model: str, served: str, prompt_tokens: int, completion_tokens: int, requests: int = 1) -> None:
        counts = self.rows.setdefault((self.stage, model, served), dict.fromkeys(COUNTS, 0))
        counts["requests"] += requests
        counts["prompt_tokens"] += int(prompt_tokens or 0)
        counts["completion_tokens"] += int(completion_tokens or 0)

    def cost(self, served: str, counts: Mapping[str, int]) -> float | None:
        price = price_of(self.prices, served)
        if price is None:
            return None
        return (counts["prompt_tokens"] * float(price.get("prompt", 0))
                + counts["completion_tokens"] * float(price.get("completion", 0))) / 1e6

    def to_json(self) -> dict:
        rows = [{"stage": s, "model": m, "served_model": sv, **c, "cost": self.cost(sv, c)}
                for (s, m, sv), c in sorted(self.rows.items())]
        total = {c: sum(r[c] for r in rows) for c in COUNTS}
        costs = [r["cost"] for r in rows]
        total["cost"] = sum(costs) if costs and all(c is not None for c in costs) else None
        return {"rows": rows, "total": total}

    def save(self) -> None:
        if self.path is not None:
            atomic_write_json(self.path, self.to_json())


def usage_line(usage: Mapping) -> str:
    """One line on a run's usage (``usage.json``'s content)."""
    t = usage.get("total") or {}
    cost = t.get("cost")
    return (f"{t.get('requests', 0):,} requests, {t.get('prompt_tokens', 0):,} prompt and "
            f"{t.get('completion_tokens', 0):,} completion tokens" + (f", ${cost:,.4f}" if cost is not None else ""))
