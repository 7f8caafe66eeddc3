"""How good and how fast the embedded model is: Arithmetic accuracy (round-1 prompt) and generation speed.

Responses are read with the product's Arithmetic extractor (the same the debate uses) and graded against the
exact value.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Mapping, Sequence

from mafl.tiny.corpus import ArithmeticProblem, load_prompts


def final_answer(response: str) -> int | None:
    """The integer a response ends with (the Arithmetic task's extraction); None when there is none."""
    from mafl.tasks.answers import numeric_answer, parse_number

    answer = numeric_answer(response)
    value = None if answer is None else parse_number(answer)
    return int(value) if value is not None and value.denominator == 1 else None


def round1_prompts(tokenizer, problems: Sequence[ArithmeticProblem],
                   prompts: Mapping[str, str] | None = None) -> list[str]:
    prompts = prompts or load_prompts()
    return [tokenizer.apply_chat_template(
        [{"role": "system", "content": prompts["system_generator"]},
         {"role": "user", "content": prompts["round1"].format(question=p.question)}],
        add_generation_prompt=True, tokenize=False) for p in problems]


def generate(model, tokenizer, texts: Sequence[str], *, batch_size: int = 250, max_new_tokens: int = 96,
             do_sample: bool = False, seed: int = 0) -> tuple[list[str], int, float]:
    """Batched generation (KV cache, left padding). Returns (responses, new tokens, seconds)."""
    import torch

    torch.manual_seed(seed)
    sampling = {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0} if do_sample else {
        "do_sample": False}
    out, n_tokens, start = [], 0, time.perf_counter()
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(list(texts[i:i + batch_size]), return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, use_cache=True,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, **sampling)
        new = gen[:, enc["input_ids"].shape[1]:]
        n_tokens += int((new != tokenizer.pad_token_id).sum())
        out.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
    return out, n_tokens, time.perf_counter() - start


@dataclass(frozen=True)
class Accuracy:
    accuracy: float
    stderr: float
    n: int
    tokens_per_second: float


def accuracy(model, tokenizer, problems: Sequence[ArithmeticProblem], *, do_sample: bool = False,
             batch_size: int = 250, seed: int = 0) -> Accuracy:
    """Share of ``problems`` whose round-1 response ends with the right answer."""
    responses, n_tokens, seconds = generate(model, tokenizer, round1_prompts(tokenizer, problems),
                                            batch_size=batch_size, do_sample=do_sample, seed=seed)
    hits = [final_answer(r) == p.answer for r, p in zip(responses, problems)]
    acc = sum(hits) / len(hits)
    return Accuracy(acc, (acc * (1 - acc) / len(hits)) ** 0.5, len(hits), n_tokens / seconds)
