"""Corpus v7 of the embedded model: the declared noise model of solvers and the critic replies that check."""
from __future__ import annotations

import random
import re
from collections import Counter

import pytest

from mafl.tiny.corpus import conversation, critic_reply, load_prompts, summary_text
from mafl.tiny.evaluate import final_answer
from mafl.tiny.solvers import (ArithmeticProblem, Error, SolverNoise, chain, first_difference, random_problem, solve,
                               trap_delta)

P = ArithmeticProblem(3, 4, 5, 6, 7, 8)  # 4*5=20, 7*8=56, 3+6=9, 9+20=29, 29-56=-27


def test_a_chain_carries_its_error_on_consistently():
    assert chain(P).text == solve(P)[0] == "4*5=20, 7*8=56, 3+6=9, 9+20=29, 29-56=-27. The answer is -27."
    assert chain(P, Error("carry", 1, 10)).text == "4*5=20, 7*8=66, 3+6=9, 9+20=29, 29-66=-37. The answer is -37."
    assert chain(P, Error("miscopy", 2, operand="d", copied=7)).text == (
        "4*5=20, 7*8=56, 3+7=10, 10+20=30, 30-56=-26. The answer is -26.")
    assert chain(P, Error("slip", 4, -1)).answer == -28


def test_the_trap_is_a_forgotten_borrow_of_the_final_subtraction():
    # 29-56=-(56-29), and 56-29 borrows in the ones place (6 < 9); forgetting it gives 37, so -37
    assert trap_delta(P) == -10 and P.answer - 10 == -37
    no_borrow = ArithmeticProblem(5, 2, 2, 0, 1, 1)  # 9-1: no borrow
    assert trap_delta(no_borrow) is None
    borrow = ArithmeticProblem(2, 2, 2, 0, 1, 5)  # 6-5: no borrow; 12-5 would borrow
    assert trap_delta(borrow) is None
    assert trap_delta(ArithmeticProblem(2, 2, 5, 0, 1, 5)) == 10  # 12-5=7; forgetting the borrow: 17


def test_the_noise_models_declared_rates_are_what_it_produces():
    noise, rng = SolverNoise(), random.Random(0)
    n, wrong, kinds, trap_wrong, trap_fell = 30000, 0, Counter(), 0, 0
    for _ in range(n):
        p = random_problem(rng)
        c = noise.solver(p, rng)
        assert c.answer == p.answer if c.error is None else c.answer != p.answer
        if c.error is None:
            continue
        wrong += 1
        assert all(s.result >= 0 for s in c.steps[:-1]) and abs(c.answer) <= 999
        if trap_delta(p) is not None:
            trap_wrong += 1
            trap_fell += c.error.kind == "trap"
        if c.error.kind == "trap":
            assert c.answer == p.answer + trap_delta(p)
        else:
            kinds[c.error.kind] += 1
    assert wrong / n == pytest.approx(noise.wrong, abs=0.01)
    assert trap_fell / trap_wrong == pytest.approx(noise.trap, abs=0.02)
    total = sum(kinds.values())
    # a miscopy that would go below 0 or leave the answer right is redrawn, so its share is a little lower
    for kind, weight in noise.kinds.items():
        assert kinds[kind] / total == pytest.approx(weight, abs=0.04), kind


def test_wrong_solvers_of_a_trap_problem_often_agree():
    noise, rng = SolverNoise(), random.Random(1)
    p = next(q for q in (random_problem(rng) for _ in range(100)) if trap_delta(q) is not None)
    wrong = [c.answer for c in (noise.solver(p, rng) for _ in range(2000)) if c.error is not None]
    top, count = Counter(wrong).most_common(1)[0]
    assert top == p.answer + trap_delta(p) and count / len(wrong) > 0.45


def _reply(own, others, shown):
    return critic_reply(P, own, [(a, c) for a, c in others], chains_shown=shown)


def test_a_critic_states_every_answer_and_keeps_a_right_unanimous_one():
    right = chain(P)
    for shown in (True, False):
        text = _reply(right, [(1, right), (3, right)], shown)
        assert text == "I said -27. Agent 1 says -27. Agent 3 says -27. All agents agree on -27. The answer is -27."


def test_a_critic_verifies_an_answer_all_agents_agree_on_wrongly():
    trapped = chain(P, Error("trap", 4, trap_delta(P)))
    for shown in (True, False):
        text = _reply(trapped, [(1, trapped), (2, trapped)], shown)
        assert text.startswith("I said -37. Agent 1 says -37. Agent 2 says -37. All agents agree on -37. Checking: ")
        assert text.endswith(solve(P)[0]) and final_answer(text) == P.answer == -27


def test_a_critic_names_and_recomputes_the_first_step_where_the_chains_differ():
    carry = chain(P, Error("carry", 1, 10))  # 7*8=66
    slip = chain(P, Error("slip", 3, 1))  # 9+20=30
    text = _reply(slip, [(2, carry), (3, chain(P))], True)
    assert text == ("I said -26. Agent 2 says -37. Agent 3 says -27. The chains differ first at 7*8: 7*8=56. "
                    "Checking: " + solve(P)[0])
    assert first_difference([slip, carry, chain(P)]) == 1 and first_difference([slip, slip]) is None
    # with a summary only the answers are known: no step is named
    assert _reply(slip, [(2, carry), (3, chain(P))], False) == (
        "I said -26. Agent 2 says -37. Agent 3 says -27. Checking: " + solve(P)[0])


def test_even_a_critic_alone_in_the_right_rechecks_and_ends_right():
    text = _reply(chain(P), [(1, chain(P, Error("carry", 4, 10))), (2, chain(P, Error("carry", 4, 10)))], False)
    assert "Checking: " in text and final_answer(text) == P.answer


def test_every_critic_reply_of_the_corpus_ends_right_and_states_the_answers_it_was_shown():
    prompts, rng = load_prompts(), random.Random(4)
    counts = Counter()
    for _ in range(300):
        p = random_problem(rng)
        for kind in ("debate", "debate_summary"):
            chat = conversation(kind, p, rng, prompts)
            reply, own = chat[-1]["content"], final_answer(chat[2]["content"])
            assert final_answer(reply) == p.answer
            shown = re.findall(r"Agent (\d) (?:says|: .*The answer is) (-?\d+)", chat[3]["content"])
            if kind == "debate":
                shown = re.findall(r"^Agent (\d): .*The answer is (-?\d+)\.$", chat[3]["content"], flags=re.M)
            stated = " ".join([f"I said {own}."] + [f"Agent {a} says {x}." for a, x in shown])
            assert reply.startswith(stated) and 1 <= len(shown) <= 4
            counts["agree" if "All agents agree" in reply else "check"] += 1
            counts["named"] += "differ first" in reply
        summary = conversation("summarize", p, rng, prompts)
        shown = re.findall(r"^Agent (\d): .*The answer is (-?\d+)\.$", summary[0]["content"], flags=re.M)
        assert summary[1]["content"] == " ".join(f"Agent {a} says {x}." for a, x in shown)
    assert counts["agree"] > 50 and counts["check"] > 300 and counts["named"] > 100


def test_summary_text_states_each_label():
    assert summary_text([(1, chain(P)), (3, chain(P, Error("slip", 4, 2)))]) == "Agent 1 says -27. Agent 3 says -25."
