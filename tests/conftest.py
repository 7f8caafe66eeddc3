"""Shared fixtures: a tiny random Llama with the embedded tokenizer, built from a config (no hub)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def make_random_model(path: Path, hidden: int = 64, layers: int = 2, seed: int = 0, bos: bool = False,
                      tie: bool = True) -> Path:
    """A randomly initialised Llama with the embedded tokenizer, saved like any hub model. ``bos``: the tokenizer
    gets a BOS token that it adds to any text it tokenizes (as Llama's does), and a chat template that writes it
    too, so a prompt tokenized carelessly starts with two. ``tie=False``: an output layer of its own; a random
    model with tied embeddings greedily repeats the prompt's last token (here ``<|assistant|>``, an empty text),
    an untied one says different things to different prompts."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from mafl.tiny.tokenizer import CHAT_TEMPLATE, build_tokenizer

    corpus = [
        "What is the result of 3+4*5+6-7*8? Make sure to state your answer at the end of the response.",
        "4*5=20. 7*8=56. 3+20=23. 23+6=29. 29-56=-27. The answer is -27.",
        "These are the answers of other agents: Agent 1: The answer is 12.",
    ] * 20
    tok = build_tokenizer(corpus, vocab_size=320)
    if bos:
        from tokenizers.processors import TemplateProcessing

        tok.add_special_tokens({"bos_token": "<|bos|>"})
        tok.backend_tokenizer.post_processor = TemplateProcessing(
            single="<|bos|> $A", pair="<|bos|> $A $B", special_tokens=[("<|bos|>", tok.bos_token_id)])
        tok.chat_template = "{{ bos_token }}" + CHAT_TEMPLATE
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
        tie_word_embeddings=tie,
    )
    model = LlamaForCausalLM(cfg)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return make_random_model(tmp_path_factory.mktemp("random_llama"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "gsm8k" / "test.jsonl").exists():
        pytest.skip(f"the offline benchmark data is not at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def talking_model_dir(tmp_path_factory) -> Path:
    """A random Llama whose greedy answers differ from prompt to prompt (``make_random_model(tie=False)``)."""
    return make_random_model(tmp_path_factory.mktemp("random_llama_untied"), tie=False)


@pytest.fixture(scope="session")
def bos_model_dir(tmp_path_factory) -> Path:
    """A random Llama whose tokenizer has a BOS token (see ``make_random_model``)."""
    return make_random_model(tmp_path_factory.mktemp("random_llama_bos"), bos=True)


@pytest.fixture(scope="session")
def small_tiny_model_dir(tmp_path_factory) -> Path:
    """The embedded model's recipe shrunk (hidden 64, 2 layers, 300 steps; 150 were too few for corpus v7's longer
    rows): built in about a minute, it writes answers in the tiny model's form (wrong ones), so a debate gives
    fine-tuning sets and the loop trains real adapters. Its critic replies restate the answers before their chain:
    give a debate of it 72 new tokens or more, or the critics are cut off and nothing trains."""
    from hydra import compose, initialize_config_dir

    from mafl.tiny import ensure_tiny_model

    with initialize_config_dir(config_dir=str(REPO / "mafl" / "conf"), version_base="1.3"):
        recipe = dict(compose(config_name="config").model.tiny)
    recipe.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, steps=300,
                  batch_size=16, warmup_steps=10)
    return ensure_tiny_model(recipe, home=tmp_path_factory.mktemp("mafl_home"), progress=False)
