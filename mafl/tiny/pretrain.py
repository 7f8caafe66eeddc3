"""Pretrain the embedded model: a small Llama learns Arithmetic debates from the generated corpus.

Conversations are batched whole (each from position 0, as at generation time), the loss is taken on the
assistant turns only, and the schedule is AdamW with a linear warm-up and a cosine decay, budgeted in steps.
The number tokens 0..999 start from place-value embeddings (one random vector per place and digit, summed),
so a number's digits can be read off its embedding, and written back through the tied output layer, from the
first step on: a product becomes a look-up and a sum a function of the operands' digits. By default they stay
frozen there (``freeze_numbers``), so the model only has to put the right digit vectors into its last hidden
state; the digit vectors are drawn at ``place_value_scale`` times the usual initial scale, so that the number
logits can be sharp (at the usual scale the model copies numbers badly when sampling at T=1).
Everything is seeded: the same recipe gives the same weights on the same kind of CPU, torch build and number of
threads. Another CPU runs other float kernels (AVX-512 against AVX2 sums in another order), and over 1,600 steps
that grows into another model (two machines that both run AVX-512 kernels built two models too): ``recipe.json``
records what built it (``built_with``: torch, kernels, threads and the processor) and the weights' hash
(``weights_sha256``), which every run's results.json carries (``model_weights``).
"""
from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping

from mafl.model_weights import weights_sha256
from mafl.tiny.corpus import drill, load_prompts, sample_conversations


@dataclass(frozen=True)
class Recipe:
    """How the embedded model is built; every key is in the ``tiny:`` block of conf/model/tiny.yaml."""

    vocab_size: int = 512
    hidden_size: int = 256
    intermediate_size: int = 768
    num_hidden_layers: int = 4
    num_attention_heads: int = 8
    max_position_embeddings: int = 1024
    steps: int = 1000
    batch_size: int = 32  # conversations per step
    learning_rate: float = 3.0e-3
    warmup_steps: int = 50
    weight_decay: float = 0.01
    autocast_bf16: bool = False
    # weights of the conversation kinds in the corpus (see mafl.tiny.corpus.KINDS)
    mix_round1: float = 0.5
    mix_debate: float = 0.3
    mix_summarize: float = 0.1
    mix_debate_summary: float = 0.1
    # share of the corpus spent on bare practice of the operations ("12*24=288"), facts per practice row
    mix_drill: float = 0.0
    drill_facts: int = 16
    # share of the drilled problems that give only their two multi-digit steps (the running sum and the difference)
    drill_big_share: float = 0.0
    # start the number tokens 0..999 with a sum of one random vector per (place, digit), so that their digits
    # can be read off (and written back) linearly from the first step
    place_value_init: bool = True
    # standard deviation of those digit vectors, in units of the model's initializer_range
    place_value_scale: float = 1.0
    # keep the number tokens' embeddings (tied to the output layer) at their place-value start
    freeze_numbers: bool = False
    low: int = 0
    high: int = 29
    seed: int = 0

    @classmethod
    def from_mapping(cls, recipe: Mapping[str, Any]) -> "Recipe":
        known = {f.name: f.type for f in fields(cls)}
        unknown = set(recipe) - set(known)
        if unknown:
            raise ValueError(f"unknown tiny recipe keys {sorted(unknown)}; known: {sorted(known)}")
        defaults = asdict(cls())
        return cls(**{k: _cast(defaults[k], v) for k, v in recipe.items()})

    @property
    def mix(self) -> dict[str, float]:
        return {"round1": self.mix_round1, "debate": self.mix_debate, "summarize": self.mix_summarize,
                "debate_summary": self.mix_debate_summary}


def _cast(default: Any, value: Any) -> Any:
    if isinstance(default, bool) and isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return type(default)(value)


def _encode(tokenizer, conversation: list[dict[str, str]]) -> tuple[list[int], list[int]]:
    """Token ids of a whole chat and labels that keep only the assistant turn (with its closing eos), tokenized
    as fine-tuning and generation tokenize it (``mafl.backends.chat``)."""
    from mafl.backends.chat import example_ids

    ids, mask = example_ids(tokenizer, conversation[:-1], conversation[-1]["content"])
    return ids, [t if m else -100 for t, m in zip(ids, mask)]


class Batches:
    """An endless, seeded stream of (input_ids, attention_mask, labels) batches of whole conversations.

    Each conversation starts at position 0 and sees nothing else (as at generation time); a pool of
    conversations is sorted by length before it is cut into batches, so little compute goes to padding.
    """

    def __init__(self, recipe: Recipe, tokenizer, prompts: Mapping[str, str], pool: int = 8):
        self.recipe, self.tokenizer, self.prompts, self.pool = recipe, tokenizer, prompts, pool
        self.rng = random.Random(f"mafl-tiny-corpus-{recipe.seed}")
        self.pending: list[list[tuple[list[int], list[int]]]] = []

    def _drill(self) -> tuple[list[int], list[int]]:
        """One practice row: the loss is on each result (and the newline after it), not on the operands."""
        ids, labels = [], []
        r = self.recipe
        for question, result in drill(self.rng, r.drill_facts, r.low, r.high, r.drill_big_share):
            q = self.tokenizer(question, add_special_tokens=False)["input_ids"]
            a = self.tokenizer(result + "\n", add_special_tokens=False)["input_ids"]
            ids += q + a
            labels += [-100] * len(q) + a
        return ids, labels

    def _refill(self) -> None:
        r = self.recipe
        n = r.batch_size * self.pool
        total = sum(r.mix.values()) + r.mix_drill
        drills = round(n * r.mix_drill / total) if total > 0 else 0
        convs = sample_conversations(n - drills, self.rng, r.mix, self.prompts, r.low, r.high)
        encoded = [_encode(self.tokenizer, c) for c in convs] + [self._drill() for _ in range(drills)]
        encoded = sorted(encoded, key=lambda x: len(x[0]))
        batches = [encoded[i:i + r.batch_size] for i in range(0, len(encoded), r.batch_size)]
        self.rng.shuffle(batches)
        self.pending.extend(batches)

    def next(self):
        import torch

        if not self.pending:
            self._refill()
        rows = self.pending.pop()
        length = max(len(x) for x, _ in rows)
        ids = torch.full((len(rows), length), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        labels = torch.full((len(rows), length), -100, dtype=torch.long)
        for i, (x, y) in enumerate(rows):
            ids[i, :len(x)] = torch.tensor(x)
            mask[i, :len(x)] = 1
            labels[i, :len(y)] = torch.tensor(y)
        return ids, mask, labels


def corpus_sample_for_tokenizer(recipe: Recipe, prompts: Mapping[str, str], n: int = 2000) -> list[str]:
    rng = random.Random(f"mafl-tiny-tokenizer-{recipe.seed}")
    convs = sample_conversations(n, rng, recipe.mix, prompts, recipe.low, recipe.high)
    return [m["content"] for c in convs for m in c]


def build_model(recipe: Recipe, tokenizer):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(recipe.seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=recipe.hidden_size, intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.num_hidden_layers, num_attention_heads=recipe.num_attention_heads,
        num_key_value_heads=recipe.num_attention_heads, max_position_embeddings=recipe.max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(cfg)
    if recipe.place_value_init:
        _place_value_init(model, tokenizer, recipe.place_value_scale)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = None
    return model


def _place_value_init(model, tokenizer, scale: float = 1.0) -> None:
    """Embedding of the number token n (0..999) = place[0][hundreds] + place[1][tens] + place[2][ones]."""
    import torch

    from mafl.tiny.tokenizer import number_token_ids

    emb = model.get_input_embeddings().weight
    std = model.config.initializer_range * scale
    place = torch.randn(3, 10, emb.shape[1]) * std
    with torch.no_grad():
        for n, token in enumerate(number_token_ids(tokenizer)):
            h, t, o = (int(c) for c in f"{n:03d}")
            emb[token] = place[0, h] + place[1, t] + place[2, o]


def _number_rows(model, tokenizer):
    """(ids, embeddings) of the number tokens 0..999, to put back after each optimizer step."""
    import torch

    from mafl.tiny.tokenizer import number_token_ids

    ids = torch.tensor(number_token_ids(tokenizer))
    return ids, model.get_input_embeddings().weight.detach()[ids].clone()


def _lr_factor(step: int, recipe: Recipe) -> float:
    import math

    if step < recipe.warmup_steps:
        return (step + 1) / recipe.warmup_steps
    progress = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def pretrain(recipe: Recipe, out_dir: str | Path, *, prompts: Mapping[str, str] | None = None,
             progress: bool = True) -> dict[str, Any]:
    """Build the tokenizer and the model, pretrain for ``recipe.steps`` steps and save both to ``out_dir``.
    Returns statistics (seconds, final loss, parameter count)."""
    import contextlib

    import torch

    from mafl.progress import stage
    from mafl.tiny.tokenizer import build_tokenizer

    prompts = dict(prompts or load_prompts())
    random.seed(recipe.seed)
    tokenizer = build_tokenizer(corpus_sample_for_tokenizer(recipe, prompts), vocab_size=recipe.vocab_size)
    model = build_model(recipe, tokenizer)
    batches = Batches(recipe, tokenizer, prompts)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=recipe.learning_rate, betas=(0.9, 0.98), eps=1e-8)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, recipe))
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if recipe.autocast_bf16
                else contextlib.nullcontext())
    frozen = _number_rows(model, tokenizer) if recipe.freeze_numbers else None
    model.train()
    start, losses = time.perf_counter(), []
    display = stage("pretraining the tiny model", total=recipe.steps, unit="step") if progress else None
    with display or contextlib.nullcontext() as bar:
        for step in range(recipe.steps):
            ids, mask, labels = batches.next()
            with autocast:
                loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            if frozen is not None:
                with torch.no_grad():
                    model.get_input_embeddings().weight[frozen[0]] = frozen[1]
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            if bar is not None:
                bar.update(1)
                if step % 10 == 0:
                    bar.set_note(f"loss {sum(losses[-10:]) / len(losses[-10:]):.3f}")
    seconds = time.perf_counter() - start
    model.eval()
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    tail = losses[-20:]
    return {"pretrain_seconds": round(seconds, 1), "final_loss": round(sum(tail) / max(1, len(tail)), 4),
            "parameters": sum(p.numel() for p in model.parameters()), "weights_sha256": weights_sha256(out_dir),
            "built_with": {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                           "threads": torch.get_num_threads(), "cpu": this_cpu()}}


def describe_cpu(cpuinfo: str, fallback: str = "") -> str:
    """The processor named by a Linux ``/proc/cpuinfo`` text: vendor, model name, family and model numbers (two
    CPUs that both run AVX-512 kernels can still build different tiny models, and a hypervisor's model name alone
    may be as bare as "AMD EPYC"); ``fallback`` where the text names none."""
    first: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            if first:
                break  # the first processor's block ends at its blank line
            continue
        first.setdefault(key.strip(), value.strip())
    name = " ".join(v for v in (first.get("vendor_id"), first.get("model name")) if v)
    numbers = ", ".join(f"{k.removeprefix('cpu ')} {first[k]}" for k in ("cpu family", "model") if k in first)
    if not name:
        return fallback
    return f"{name} ({numbers})" if numbers else name


def this_cpu() -> str:
    """``describe_cpu`` of this machine (the platform's processor string where there is no /proc/cpuinfo)."""
    import platform

    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    return describe_cpu(text, fallback=platform.processor() or platform.machine())
