"""Reading final answers out of model text: plain functions, each tested on literal strings.

Everything here is linear in the input and bounded: a response is cut to its last ``MAX_RESPONSE_CHARS``
characters (the final answer is at the end), an extracted answer longer than ``MAX_ANSWER_CHARS`` is refused
(None), and a number with more than ``MAX_NUMBER_DIGITS`` digits is not a number. No text is ever evaluated.

Numbers: ``1,234`` is one thousand two hundred thirty-four (a comma followed by exactly three digits is a
thousands separator), ``1.234`` is a decimal, ``-27`` is negative only when the minus sign is not a binary
minus (``5-3`` reads as 5 and 3). Values are exact ``Fraction``s, so ``18.00 == 18`` and ``0.1 + 0.2 == 0.3``.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from fractions import Fraction

MAX_RESPONSE_CHARS = 32_000
MAX_ANSWER_CHARS = 1_000
MAX_NUMBER_DIGITS = 100

_BOX = re.compile(r"\\(?:boxed|fbox)\b")
# a run of digits, dots and commas (split into numbers by ``_run_numbers``); the sign only when it is not a
# binary minus; an optional "/denominator". Runs never overlap, so scanning is linear in the text.
_RUN = re.compile(
    r"(?:(?<![\w.)\]}])(?P<sign>[-−])|(?<![\w.]))(?:\\?\$\s?)?"
    r"(?P<run>\d[\d.,]*|\.\d[\d.,]*)(?:/(?P<den>\d{1,20})(?!\d|\.\d))?"
)
_ONE_NUMBER = re.compile(r"(?P<sign>[-−]?)\s*(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)")
_DECIMAL = re.compile(r"\d+(?:\.\d+)?")
_FRACTION = re.compile(r"^(-?)\\[dt]?frac\{(-?\d+)\}\{(-?\d+)\}$|^(-?\d+)/(-?\d+)$")
_ANSWER_PHRASE = re.compile(
    r"\b(?:final\s+answer|the\s+answer|answer)\s*(?:(?:is|was|would\s+be|will\s+be|should\s+be)\b|[:=])\s*:?", re.I
)


def clip(response: str) -> str:
    """The last ``MAX_RESPONSE_CHARS`` characters of a response (where its final answer is)."""
    return response[-MAX_RESPONSE_CHARS:]


def _brace_partners(text: str) -> dict[int, int]:
    """Position of every ``{`` that is closed -> position of its ``}`` (one linear pass)."""
    partners: dict[int, int] = {}
    stack: list[int] = []
    escaped = False
    for i, ch in enumerate(text):
        if escaped:  # \{ and \} are literal braces in LaTeX
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            partners[stack.pop()] = i
    return partners


def last_boxed(text: str) -> str | None:
    """Content of the last closed ``\\boxed{...}`` / ``\\fbox{...}`` (brace matching), or ``\\boxed 5``."""
    text = clip(text)
    starts = [m.end() for m in _BOX.finditer(text)]
    if not starts:
        return None
    partners = _brace_partners(text)
    for start in reversed(starts):
        i = start
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            if i in partners:
                return text[i + 1 : partners[i]].strip()
            continue  # unclosed (e.g. a cut-off generation): try the one before
        if i > start:  # "\boxed 5": one token up to whitespace or the end of the math
            token = re.match(r"[^\s$]+", text[i:])
            if token:
                return token.group(0).rstrip(".,")
    return None


def to_number(token: str) -> Fraction | None:
    """The exact value of one number token as matched by the number pattern (sign, commas, decimals)."""
    digits = token.replace(",", "").replace("−", "-")
    if len(digits) > MAX_NUMBER_DIGITS + 2:
        return None
    try:
        return Fraction(digits)
    except (ValueError, ZeroDivisionError):
        return None


def _run_numbers(run: str) -> list[str]:
    """The number tokens of one run: ``1,234.5`` -> [1,234.5]; ``1,2345`` -> [1, 2345]; ``1.2.3`` -> [1.2, 3]."""
    run = run.rstrip(".,")
    if _ONE_NUMBER.fullmatch(run):
        return [run]
    return [tok for piece in run.split(",") for tok in _DECIMAL.findall(piece)]


def numbers_in(text: str) -> list[Fraction]:
    """Every number in ``text``, in order."""
    text = text.replace("{,}", ",").replace("\\!", "")
    out = []
    for m in _RUN.finditer(text):
        tokens = _run_numbers(m.group("run"))
        for i, token in enumerate(tokens):
            value = to_number(("-" if i == 0 and m.group("sign") else "") + token)
            if value is not None and i == len(tokens) - 1 and m.group("den"):
                den = int(m.group("den"))
                value = value / den if den else None
            if value is not None:
                out.append(value)
    return out


def _answer_lines(text: str, limit: int = 50, width: int = 300) -> Iterator[str]:
    """What follows each of the last ``limit`` "The answer is" / "Final answer:" phrases, to the end of its line
    (at most ``width`` characters), the last phrase first."""
    found = list(_ANSWER_PHRASE.finditer(text))
    for m in reversed(found[-limit:]):
        end = text.find("\n", m.end(), m.end() + width)
        yield text[m.end() : end if end >= 0 else m.end() + width]


_STRIP = re.compile(r"\\(?:text|mathrm|textbf|mbox)\{[^{}]*\}|\\[%$!,;: ]|[%$]|\.$")


def parse_number(text: str) -> Fraction | None:
    """``text`` read as exactly one number, or None. Accepts ``$1,234.00``, ``50%``, ``-\\frac{1}{2}``, ``3/4``,
    units in ``\\text{}``; refuses anything else (``5 or 6``, ``x+1``, ``1.2.3``)."""
    if len(text) > MAX_ANSWER_CHARS:
        return None
    s = text.replace("{,}", ",").replace("−", "-").replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _STRIP.sub("", s.strip()).strip()
    if s.startswith("{") and s.endswith("}"):
        s = s[1:-1].strip()
    m = _FRACTION.match(s)
    if m:
        sign, num, den = (m.group(1), m.group(2), m.group(3)) if m.group(2) else ("", m.group(4), m.group(5))
        a, b = to_number(num), to_number(den)
        if a is None or b is None or b == 0:
            return None
        return -a / b if sign else a / b
    m = _ONE_NUMBER.fullmatch(s)
    return to_number(m.group("sign") + m.group("num")) if m else None


def format_number(value: Fraction) -> str:
    """Canonical text of a value: ``1234``, ``-27``, ``18.5``, or ``1/3`` when the decimal does not end."""
    if value.denominator == 1:
        return str(value.numerator)
    den, twos, fives = value.denominator, 0, 0
    while den % 2 == 0:
        den, twos = den // 2, twos + 1
    while den % 5 == 0:
        den, fives = den // 5, fives + 1
    if den != 1:
        return f"{value.numerator}/{value.denominator}"
    places = max(twos, fives)
    scaled = abs(value.numerator) * 10**places // value.denominator
    whole, frac = divmod(scaled, 10**places)
    sign = "-" if value < 0 else ""
    return f"{sign}{whole}.{str(frac).zfill(places).rstrip('0')}"


def stated_answer(text: str) -> str | None:
    """The text after the last "The answer is ..." / "Final answer:" that is followed by something, to the
    end of its line."""
    for rest in _answer_lines(clip(text)):
        if rest.strip():
            return rest.strip()
    return None


def numeric_answer(response: str) -> str | None:
    """The final numeric answer of a response, canonical (``format_number``), or None.

    Order: the last ``\\boxed{}`` (a fraction or the last number inside it); else the number after the last
    ``####`` (GSM8K's own format); else the first number after the last "The answer is" / "Final answer:"; else
    the last number in the text.
    """
    text = clip(response)
    boxed = last_boxed(text)
    if boxed is not None:
        value = parse_number(boxed)
        if value is None:
            found = numbers_in(boxed)
            value = found[-1] if found else None
        return None if value is None else format_number(value)
    hashes = text.rfind("####")
    if hashes >= 0:
        found = numbers_in(text[hashes + 4 : hashes + 304])
        if found:
            return format_number(found[0])
    for rest in _answer_lines(text):
        found = numbers_in(rest)
        if found:
            return format_number(found[0])
    found = numbers_in(text)
    return format_number(found[-1]) if found else None
