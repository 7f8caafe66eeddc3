"""Arithmetic, GSM8K and the JSONL task's answer types: extraction and equivalence on literal strings."""
from __future__ import annotations

import re

import pytest

from mafl.tasks import Task, get_task, task_from_config
from mafl.tasks.arithmetic import arithmetic_problems, arithmetic_value
from mafl.tasks.base import BadRow


@pytest.fixture(scope="module")
def arithmetic() -> Task:
    return get_task("arithmetic")


@pytest.fixture(scope="module")
def gsm8k() -> Task:
    return get_task("gsm8k")


@pytest.mark.parametrize("response, answer", [
    ("4*5=20. 7*8=56. 3+20=23. 23+6=29. 29-56=-27. The answer is -27.", "-27"),
    ("The answer is 1,234 because ...", "1234"),
    (r"The result is \boxed{181}.", "181"),
    ("So we get 5 + 6 = 11, and I am confident", "11"),
    ("The answer is -27.0", "-27"),
    ("I cannot solve this.", None),
])
def test_arithmetic_extraction(arithmetic, response, answer):
    assert arithmetic.extract_answer(response) == answer


def test_arithmetic_grading(arithmetic):
    assert arithmetic.is_equivalent(arithmetic.extract_answer("The answer is -27."), "-27")
    assert not arithmetic.is_equivalent(arithmetic.extract_answer("The answer is 27."), "-27")
    assert not arithmetic.is_equivalent(arithmetic.extract_answer("No idea."), "-27")  # unparseable: wrong
    assert not arithmetic.is_equivalent(None, "-27")


def test_arithmetic_problems_follow_the_paper():
    train, eval_ = arithmetic_problems(n_train=500, n_eval=500)
    assert len(train) == len(eval_) == 500
    pattern = re.compile(r"What is the result of (\d+)\+(\d+)\*(\d+)\+(\d+)-(\d+)\*(\d+)\?")
    for p in train + eval_:
        ops = [int(x) for x in pattern.fullmatch(p.question).groups()]
        assert all(0 <= x <= 29 for x in ops)
        assert p.answer == str(arithmetic_value(*ops)) == str(ops[0] + ops[1] * ops[2] + ops[3] - ops[4] * ops[5])
    assert not {p.question for p in train} & {p.question for p in eval_}
    assert len({p.question for p in train}) == 500 and len({p.id for p in train + eval_}) == 1000


def test_arithmetic_problems_depend_on_their_seeds_and_range_only():
    a_train, a_eval = arithmetic_problems(20, 10, eval_seed=3, train_seed=3)
    b_train, b_eval = arithmetic_problems(20, 10, eval_seed=3, train_seed=3)
    c_train, c_eval = arithmetic_problems(20, 10, eval_seed=4, train_seed=3)
    d_train, d_eval = arithmetic_problems(20, 10, eval_seed=3, train_seed=4)
    assert a_eval == b_eval and a_train == b_train
    assert [p.question for p in a_eval] != [p.question for p in c_eval]
    assert d_eval == a_eval and [p.question for p in d_train] != [p.question for p in a_train]
    assert arithmetic_problems(20, 5, eval_seed=3, train_seed=3)[1] == a_eval[:5]  # a smaller set is a prefix
    _, small = arithmetic_problems(0, 50, low=1, high=2)
    assert all(set(p.meta["operands"]) <= {1, 2} for p in small)


def test_arithmetic_problems_refuse_impossible_sizes():
    with pytest.raises(ValueError, match="n_eval"):
        arithmetic_problems(0, 65, low=0, high=1)  # only 2**6 = 64 distinct questions
    with pytest.raises(ValueError, match="n_train"):
        arithmetic_problems(None, 5)


@pytest.mark.parametrize("response, answer", [
    (r"... so she makes \boxed{18} dollars.", "18"),
    (r"\boxed{\$18.00}", "18"),
    (r"\boxed{1,234}", "1234"),
    (r"\boxed{50\%}", "50"),
    ("Janet makes 9 * 2 = $18 every day.\n#### 18", "18"),
    ("The answer is $1,234.56 in total.", "1234.56"),
    ("The answer is: 5 hours (300 minutes).", "5"),
    ("The final answer is -3 degrees.", "-3"),
    ("She ran 3.5 km, then 2 km. Total: 5.5 km", "5.5"),
    (r"\boxed{\frac{3}{4}}", "0.75"),
    ("no number at all", None),
])
def test_gsm8k_extraction(gsm8k, response, answer):
    assert gsm8k.extract_answer(response) == answer


@pytest.mark.parametrize("pred, gold, same", [
    ("18.00", "18", True),
    ("1,234", "1234", True),
    ("1.234", "1234", False),  # a decimal point is not a thousands separator
    ("$18", "18", True),
    ("0.5", "1/2", True),
    ("-5", "5", False),
    ("18", "18.01", False),
    ("18 or 19", "18", False),  # not one number: not equivalent
    ("", "18", False),
    (None, "18", False),
    ("1" * 10000, "1" * 10000, False),  # too long to be a number
])
def test_gsm8k_equivalence(gsm8k, pred, gold, same):
    assert gsm8k.is_equivalent(pred, gold) is same


def test_gsm8k_equivalence_never_raises(gsm8k):
    for pred in [object(), 5, b"18", "\x00", "\\boxed{", "1/0"]:
        assert gsm8k.is_equivalent(pred, "18") is False  # type: ignore[arg-type]
    assert gsm8k.extract_answer(None) is None  # type: ignore[arg-type]


def test_gsm8k_gold_answer(gsm8k):
    assert gsm8k.gold_answer({"question": "q", "answer": "work <<2*3=6>>6\n#### 2,125"}) == "2125"
    assert gsm8k.gold_answer({"question": "q", "answer": "#### -3.50"}) == "-3.5"
    with pytest.raises(BadRow, match="####"):
        gsm8k.gold_answer({"question": "q", "answer": "no final line"})
    with pytest.raises(BadRow, match="not a number"):
        gsm8k.gold_answer({"question": "q", "answer": "#### many"})
    with pytest.raises(BadRow, match="answer"):
        gsm8k.gold_answer({"question": "q"})


def test_jsonl_number_and_integer_tasks():
    number = get_task("jsonl", answer_type="number", question_field="q", answer_field="a")
    assert number.question_field == "q"
    assert number.gold_answer({"q": "x", "a": 2.50}) == "2.5"
    assert number.gold_answer({"q": "x", "a": "1,000"}) == "1000"
    assert number.is_equivalent(number.extract_answer("It is 2.50 m."), "2.5")
    integer = get_task("jsonl", answer_type="integer")
    assert integer.gold_answer({"question": "x", "answer": 7}) == "7"
    with pytest.raises(BadRow, match="not an integer"):
        integer.gold_answer({"question": "x", "answer": "7.5"})
    with pytest.raises(BadRow, match="not a number"):
        number.gold_answer({"q": "x", "a": [1]})


def test_jsonl_text_task():
    text = get_task("jsonl", answer_type="text")
    assert text.extract_answer(r"Thinking... \boxed{\text{Paris}}") == r"\text{Paris}"
    assert text.extract_answer("The answer is: Blue whale.") == "Blue whale."
    assert text.extract_answer("no marker here") is None
    assert text.is_equivalent(r"\text{Paris}", "paris")
    assert text.is_equivalent("Blue  whale.", "blue whale")
    assert not text.is_equivalent("Rome", "Paris")
    assert not text.is_equivalent("...", "...")  # nothing left after normalising: not an answer
    with pytest.raises(BadRow):
        text.gold_answer({"question": "q", "answer": "  "})


def test_get_task_errors_and_config():
    with pytest.raises(ValueError, match=r"^dataset.task: 'nope' is not one of"):
        get_task("nope")
    with pytest.raises(ValueError, match="answer_type"):
        get_task("jsonl", answer_type="boolean")
    task = task_from_config({"task": "jsonl", "answer_type": "integer", "n_train": 3, "prompts": {}})
    assert task.name == "jsonl" and getattr(task, "integer") is True
