"""MATH answers: extraction, math-verify equivalence in the sandbox, time limits, threads and hostile input."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from mafl.tasks import get_task
from mafl.tasks import sandbox as sandbox_module
from mafl.tasks.base import BadRow
from mafl.tasks.math_task import MathTask, canonical_text, math_level, quick_verdict

# a pathological check must come back well within this, even on a loaded 2-core machine
FEW_SECONDS = 10.0


@pytest.fixture(scope="module")
def math_task() -> MathTask:
    """Ordinary checks: a generous limit, so that a cold worker's first sympy call on a loaded machine is not a
    timeout (a timeout counts as not equivalent)."""
    return get_task("math", check_timeout=20.0)


@pytest.fixture(scope="module")
def strict_task() -> MathTask:
    """Pathological checks: a short limit, the kill of the worker that overran it part of what is timed."""
    return get_task("math", check_timeout=3.0)


@pytest.mark.parametrize("response, answer", [
    (r"Thus $a+b = \boxed{0}$.", "0"),
    (r"First \boxed{1}, no wait: $\boxed{\dfrac{1}{2}}$.", r"\dfrac{1}{2}"),
    (r"the polar form is $\boxed{\left( 3, \frac{\pi}{2} \right)}.$", r"\left( 3, \frac{\pi}{2} \right)"),
    (r"so $\boxed 5$.", "5"),
    (r"\boxed{\text{(C)}}", r"\text{(C)}"),
    ("The final answer is $\\frac{1}{3}$.", r"\frac{1}{3}"),
    ("I think it is 5", None),
    (r"\boxed{}", None),
    ("\\boxed{" + "1" * 2000 + "}", None),  # longer than an answer can be
])
def test_math_extraction(math_task, response, answer):
    assert math_task.extract_answer(response) == answer


EQUIVALENT = [
    (r"\frac{1}{2}", r"\frac12"),
    ("0.5", r"\frac{1}{2}"),
    (r"\dfrac{1}{2}", r"\frac{1}{2}"),
    (r"\tfrac{-2}{3}", r"-\frac{2}{3}"),
    ("(1, 2]", "(1,2]"),
    (r"\{2,1\}", r"\{1,2\}"),
    ("(3, 4)", r"\left( 3, 4 \right)"),
    (r"\sqrt{8}", r"2\sqrt{2}"),
    (r"\frac{\sqrt{3}}{2}", r"\dfrac{\sqrt3}{2}"),
    ("90", r"90^\circ"),
    (r"10\%", "10"),
    ("x=3", "3"),
    ("3", "x=3"),
    (r"\text{Evelyn}", r"\text{Evelyn}"),
    ("C", r"\text{(C)}"),
    ("1,234", "1234"),
    ("(x+1)^2", "x^2+2x+1"),
    (r"\$5", "5"),
    (r"\left( 3, \frac{\pi}{2} \right)", r"\left(3,\frac{\pi}{2}\right)"),
]
NOT_EQUIVALENT = [
    ("1.234", "1234"),
    ("4", "5"),
    ("0.33", r"\frac{1}{3}"),
    (r"\pi", "3.14159"),
    ("(1, 2)", "[1, 2]"),
    (r"\text{Monday}", r"\text{Tuesday}"),
    ("x+1", "x+2"),
    ("-5", "5"),
]


@pytest.mark.parametrize("pred, gold", EQUIVALENT)
def test_math_equivalent(math_task, pred, gold):
    assert math_task.is_equivalent(pred, gold) is True


@pytest.mark.parametrize("pred, gold", NOT_EQUIVALENT)
def test_math_not_equivalent(math_task, pred, gold):
    assert math_task.is_equivalent(pred, gold) is False


def test_math_equivalent_many_matches_one_by_one(math_task):
    pairs = EQUIVALENT + NOT_EQUIVALENT + [(None, "1"), ("", "1")]
    assert math_task.equivalent_many(pairs) == [True] * len(EQUIVALENT) + [False] * (len(NOT_EQUIVALENT) + 2)


def test_quick_verdict_decides_only_the_cheap_cases():
    assert quick_verdict(r"$\dfrac{1}{2}$", r"\frac{1}{2}") is True
    assert quick_verdict("18.00", "18") is True
    assert quick_verdict("1.234", "1234") is False
    assert quick_verdict("1, 100", "1100") is None  # a list, not a thousands separator: left to math-verify
    assert quick_verdict("0.5", r"\frac12") is None
    assert quick_verdict(r"\frac{2}{4}", r"-\dfrac{-1}{2}") is True
    assert quick_verdict("3", r"\frac{1}{2}") is False
    assert quick_verdict("0.333333", r"\frac{1}{3}") is None  # decimal vs fraction: math-verify's rounding decides
    assert canonical_text(r"\left( 3, \text{cm} \right)") == "(3,cm)"


def test_math_gold_answer(math_task):
    row = {"problem": "p", "solution": r"So $x = \boxed{5}$. Also \boxed{\frac{1}{2}}.", "level": "Level 2"}
    assert math_task.gold_answer(row) == r"\frac{1}{2}"
    assert math_task.gold_answer({**row, "answer": "7"}) == "7"  # MATH500 rows carry the answer
    assert math_task.gold_answer({"solution": r"it is $\boxed 2$."}) == "2"
    with pytest.raises(BadRow, match="solution"):
        math_task.gold_answer({"solution": r"there are $\boxed{}$ primes"})
    with pytest.raises(BadRow, match="solution"):
        math_task.gold_answer({"problem": "p"})
    assert math_task.row_meta({**row, "type": "Algebra"}) == {"solution": row["solution"], "level": 2,
                                                              "subject": "Algebra"}
    assert [math_level(x) for x in ("Level 3", 4, "Level ?", None)] == [3, 4, None, None]


HOSTILE = [
    r"9^{9^{9^{9}}}",
    r"10^{10^{10}}!",
    "+".join(f"x^{{{i}}}" for i in range(100)),
    r"\frac{" * 60 + "1" + "}{2}" * 60,
    "(" * 400 + "1" + ")" * 400,
    "(" * 5000 + "1" + ")" * 5000,  # 10k characters
    r"\sqrt{" * 120 + "2" + "}" * 120,
]


@pytest.mark.parametrize("hostile", HOSTILE, ids=range(len(HOSTILE)))
def test_pathological_checks_are_not_equivalent_within_seconds(strict_task, hostile):
    assert strict_task.is_equivalent("0.5", r"\frac12") is True  # math-verify: a warm worker, not timed
    start = time.perf_counter()
    assert strict_task.is_equivalent(hostile, "5") is False
    assert time.perf_counter() - start < FEW_SECONDS


def test_pathological_check_from_a_worker_thread(strict_task, math_task):
    result = {}

    def run():
        assert strict_task.is_equivalent("0.5", r"\frac12") is True  # a warm worker, as above
        start = time.perf_counter()
        result["ok"] = strict_task.is_equivalent(r"\boxed{9^{9^{9^{9}}}}"[7:-1], "5")
        result["seconds"] = time.perf_counter() - start

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=60)
    assert result["ok"] is False and result["seconds"] < FEW_SECONDS
    # and ordinary checks from several threads at once agree with the main thread
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda pair: math_task.is_equivalent(*pair), EQUIVALENT[:6] + NOT_EQUIVALENT[:6]))
    assert got == [True] * 6 + [False] * 6


def _fake_worker(tmp_path, body: str):
    script = tmp_path / "worker.py"
    script.write_text("import sys, time\nprint('{\"ready\": true}', flush=True)\n" + body)
    return script


def test_sandbox_kills_a_worker_that_does_not_answer(tmp_path, monkeypatch):
    """The hard limit holds even when the check is stuck where no signal can reach it."""
    stuck = _fake_worker(tmp_path, "sys.stdin.readline()\ntime.sleep(600)\n")
    monkeypatch.setattr(sandbox_module, "WORKER_SCRIPT", stuck)
    box = sandbox_module.Sandbox(timeout=1.0, workers=1)
    try:
        start = time.perf_counter()
        assert box.check("1", "1") is False
        assert time.perf_counter() - start < 1.0 + FEW_SECONDS / 2
        assert box.stats.timeouts == 1 and box.stats.started == 1
        assert box.check("1", "1") is False  # a new worker is started for the next check
        assert box.stats.started == 2
    finally:
        box.close()


def test_sandbox_survives_a_worker_that_dies_or_never_starts(tmp_path, monkeypatch):
    monkeypatch.setattr(sandbox_module, "WORKER_SCRIPT", _fake_worker(tmp_path, "sys.exit(3)\n"))
    box = sandbox_module.Sandbox(timeout=2.0, workers=1)
    assert box.check("1", "1") is False
    broken = tmp_path / "broken.py"
    broken.write_text("raise SystemExit(1)\n")
    monkeypatch.setattr(sandbox_module, "WORKER_SCRIPT", broken)
    box = sandbox_module.Sandbox(timeout=2.0, workers=1)
    assert box.check("1", "1") is False  # never raises
    assert box.stats.timeouts == 0


def test_sandbox_answers_from_the_real_worker():
    box = sandbox_module.Sandbox(timeout=5.0, workers=2)
    try:
        assert box.check_many([("1", "1"), (r"\frac12", "0.5"), ("1", "2"), ("x=3", "3")]) == [True, True, False, True]
        assert box.stats.timeouts == 0 and 1 <= box.stats.started <= 2
    finally:
        box.close()


def test_model_text_is_never_evaluated_as_python(math_task, tmp_path):
    """``sympify`` would run this (it calls eval); the grader must only ever parse it as LaTeX."""
    marker = tmp_path / "evaluated"
    payloads = [f"__import__('os').mkdir({str(marker)!r})", f"$__import__('os').mkdir({str(marker)!r})$"]
    for payload in payloads:
        assert math_task.is_equivalent(payload, "0") is False
        assert math_task.is_equivalent("0", payload) is False
        assert get_task("gsm8k").is_equivalent(payload, "0") is False
        get_task("jsonl", answer_type="text").is_equivalent(payload, "0")
    assert not marker.exists()
