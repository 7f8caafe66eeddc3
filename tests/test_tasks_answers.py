"""The answer-reading functions on literal strings, including the known traps and hostile inputs."""
from __future__ import annotations

import time
from fractions import Fraction

import pytest

from mafl.tasks.answers import (
    MAX_RESPONSE_CHARS, format_number, last_boxed, numbers_in, numeric_answer, parse_number, stated_answer,
)


@pytest.mark.parametrize("text, boxed", [
    (r"so \boxed{5}.", "5"),
    (r"\boxed{3} then \boxed{\frac{1}{2}}", r"\frac{1}{2}"),
    (r"\boxed{\left( 3, \frac{\pi}{2} \right)}", r"\left( 3, \frac{\pi}{2} \right)"),
    (r"$\boxed 2$.", "2"),
    (r"\boxed {17}.$$", "17"),
    (r"\fbox{x+1}", "x+1"),
    (r"\boxed{\{1,2\}}", r"\{1,2\}"),  # escaped braces are not structure
    (r"\boxed{3} and a cut-off \boxed{4", "3"),  # an unclosed box falls back to the one before
    (r"\boxed{}", ""),
    ("no box here", None),
    (r"\boxedx{5}", None),
])
def test_last_boxed(text, boxed):
    assert last_boxed(text) == boxed


@pytest.mark.parametrize("text, values", [
    ("1,234 and 1.234", [Fraction(1234), Fraction(1234, 1000)]),
    ("5-3=2", [5, 3, 2]),  # a binary minus is not a sign
    ("x=-3, y=(-4)", [-3, -4]),
    ("costs $1,234.50, or −2", [Fraction(246900, 200), -2]),
    ("1,2345", [1, 2345]),  # a comma before four digits is not a thousands separator
    ("It is 1,000,000.", [1000000]),
    ("3/4 of 12", [Fraction(3, 4), 12]),
    ("1.2.3", [Fraction(12, 10), 3]),
    (".5 cups", [Fraction(1, 2)]),
    ("x2 and a5", []),
    ("10{,}000", [10000]),
])
def test_numbers_in(text, values):
    assert numbers_in(text) == [Fraction(v) for v in values]


@pytest.mark.parametrize("text, value", [
    ("1,234", 1234), ("1.234", Fraction(617, 500)), ("$1,234.00", 1234), (r"\$18", 18), ("50%", 50),
    (r"50\%", 50), ("-27", -27), ("−27", -27), (r"-\frac{1}{2}", Fraction(-1, 2)), (r"\dfrac{3}{4}", Fraction(3, 4)),
    ("3/4", Fraction(3, 4)), (r"18 \text{ dollars}", 18), ("18.", 18), ("{5}", 5), ("- 5", -5), (" 7 ", 7),
])
def test_parse_number_accepts_one_number(text, value):
    assert parse_number(text) == value


@pytest.mark.parametrize("text", [
    "5 or 6", "x+1", "1.2.3", "", "abc", "1/0", "1,23", "1" * 500, "12,34", "5 6", "1 234",
])
def test_parse_number_refuses_everything_else(text):
    assert parse_number(text) is None


@pytest.mark.parametrize("value, text", [
    (Fraction(1234), "1234"), (Fraction(-27), "-27"), (Fraction(37, 2), "18.5"), (Fraction(1, 3), "1/3"),
    (Fraction(-1, 8), "-0.125"), (Fraction(0), "0"), (Fraction(1, 20), "0.05"), (Fraction(-7, 3), "-7/3"),
])
def test_format_number(value, text):
    assert format_number(value) == text
    assert parse_number(text) == value  # canonical text reads back to the same value


@pytest.mark.parametrize("response, answer", [
    ("4*5=20. 7*8=56. 3+20=23. 23+6=29. 29-56=-27. The answer is -27.", "-27"),
    ("The answer is 1,234.", "1234"),
    ("The answer is 1.234", "1.234"),
    ("The answer is: 42 apples, not 41.", "42"),
    ("So she pays $18.00 in total.", "18"),
    ("Final answer: 50%", "50"),
    (r"Therefore the result is \boxed{-\dfrac{3}{4}}, I think 7.", "-0.75"),
    (r"\boxed{\$1,234}", "1234"),
    (r"\boxed{18 \text{ dollars}}", "18"),
    (r"\boxed{2 \times 3 = 6}", "6"),
    ("He has 5 apples.\n#### 2,125", "2125"),
    ("The answer is 12. Let me double check: 3*4=12. Yes, the answer is 12!", "12"),
    ("the answer is 1/3.", "1/3"),
    ("The answer isn't 4; after 3 more steps we get 9", "9"),  # "isn't" does not state an answer
    ("Final Answer: The final answer is 12. I hope it is correct.", "12"),
    ("First 3 then 4, so 7", "7"),
    (r"\boxed{x}", None),  # a box with no number: unparseable, not a fallback to other numbers
    ("I do not know.", None),
    ("", None),
])
def test_numeric_answer(response, answer):
    assert numeric_answer(response) == answer


def test_stated_answer_is_the_rest_of_the_line():
    assert stated_answer("The answer is x+1.\nDone, answer is") == "x+1."
    assert stated_answer("no phrase") is None


HOSTILE = {
    "thousands chain": "111," * 20000 + "1111",
    "open boxes": "\\boxed{" * 50000,
    "open braces": "{" * 100000 + "}" * 100000,
    "minus signs": "-" * 200000,
    "answer phrases": "the answer is " * 20000,
    "digits": "9" * 200000,
    "dotted": "1." * 100000,
    "hashes": "####" * 50000,
    "fractions": "1/" * 100000,
    "many boxes": "\\boxed{1}" * 30000,
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_responses_are_read_quickly(name):
    start = time.perf_counter()
    numeric_answer(HOSTILE[name])
    last_boxed(HOSTILE[name])
    stated_answer(HOSTILE[name])
    assert time.perf_counter() - start < 2.0


def test_huge_numbers_are_not_numbers():
    assert numeric_answer("The answer is " + "9" * 5000) is None
    assert parse_number("9" * 5000) is None


def test_only_the_end_of_a_long_response_is_read():
    response = "The answer is 5. " + "x" * MAX_RESPONSE_CHARS + " The answer is 6."
    assert numeric_answer(response) == "6"
    assert numeric_answer("The answer is 5. " + "x" * MAX_RESPONSE_CHARS) is None


@pytest.mark.parametrize("task", ["arithmetic", "gsm8k"])
@pytest.mark.parametrize("response, answer", [("The answer is - 12.", "12"), ("The answer is -12.", "-12"),
                                              ("3 - 12 = -9. The answer is - 12.", "12")])
def test_a_spaced_dash_after_the_answer_phrase_is_no_sign(task, response, answer):
    """"The answer is - 12." is a dash before the number, not a minus sign: 12 (issue 23)."""
    from mafl.tasks import get_task

    assert get_task(task).extract_answer(response) == answer
