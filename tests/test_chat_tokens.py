"""Training and generation see the same prompt tokens: the trainer's rows, the transformers backend's model inputs,
the vLLM backend's engine inputs (contract: a fake engine) and the scored sequences, for a tokenizer that adds a BOS
token and for a ``model.chat_template`` override; single-turn and multi-turn prompts (a critic's whole
conversation), with the loss on the final response only."""
from __future__ import annotations

import pytest

pytest.importorskip("trl")

import torch  # noqa: E402

from mafl.backends import GenerationRequest, Sampling, ScoringRequest  # noqa: E402
from mafl.backends import chat  # noqa: E402
from mafl.finetune import build_trainer  # noqa: E402
from mafl.finetune.sets import Example, FinetuneSet  # noqa: E402

OVERRIDE = ("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
            "{% if add_generation_prompt %}[assistant]{% endif %}")
LORA = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": "all-linear", "task_type": "CAUSAL_LM"}
TRAIN = {"max_steps": 1, "per_device_train_batch_size": 2, "logging_steps": 1}

ROUND1 = [{"role": "system", "content": "You solve problems."},
          {"role": "user", "content": "What is the result of 3+4*5+6-7*8?"}]
CRITIC = [{"role": "system", "content": "You check answers."},
          {"role": "user", "content": "What is 12+7?"},
          {"role": "assistant", "content": "12+7=18. The answer is 18."},
          {"role": "user", "content": "These are the answers of other agents: Agent 1: The answer is 19. Again?"}]
EXAMPLES = [(ROUND1, "4*5=20, 7*8=56, 3+20=23, 23+6=29, 29-56=-27. The answer is -27."),
            (CRITIC, "The answer is 19.")]


@pytest.fixture(params=["bos", "override"])
def setup(request, tiny_model_dir, bos_model_dir):
    """(model folder, chat template override or None)."""
    return (str(bos_model_dir), None) if request.param == "bos" else (str(tiny_model_dir), OVERRIDE)


def trainer_rows(model_dir, template, tmp_path):
    data = FinetuneSet("critic_0", [Example(prompt=m, response=r, problem_id=str(i), correct=True)
                                    for i, (m, r) in enumerate(EXAMPLES)])
    trainer = build_trainer(model_dir, data, tmp_path / "work", mode="lora", lora=LORA, train=TRAIN,
                            chat_template=template)
    rows = [trainer.train_dataset[i] for i in range(len(EXAMPLES))]
    return trainer.processing_class, [(list(r["input_ids"]), list(r["labels"])) for r in rows]


def split(ids, labels):
    """(prompt tokens, completion tokens) of a training row: the loss starts after the prompt."""
    start = next(k for k, label in enumerate(labels) if label != -100)
    assert all(label == -100 for label in labels[:start])
    assert labels[start:] == ids[start:]  # every token after the prompt carries the loss
    return ids[:start], ids[start:]


def test_the_trainer_trains_on_the_prompt_as_rendered_and_on_the_response_only(setup, tmp_path):
    model_dir, template = setup
    tok, rows = trainer_rows(model_dir, template, tmp_path)
    for (messages, response), (ids, labels) in zip(EXAMPLES, rows):
        prompt, completion = split(ids, labels)
        # the prompt is the whole conversation rendered with the generation prompt, and nothing more
        rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert tok.decode(prompt) == rendered
        # the loss is on the final response and its eos: not on an earlier assistant turn of the conversation
        assert completion == tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert completion.count(tok.eos_token_id) == 1
        if len(messages) > 2:
            assert messages[2]["content"] in tok.decode(prompt)
        if template is None:  # the BOS: once, first (the tokenizer would add a second one to the rendered text)
            assert tok(rendered)["input_ids"][:2] == [tok.bos_token_id] * 2
            assert prompt[0] == tok.bos_token_id and prompt.count(tok.bos_token_id) == 1
        else:
            assert rendered.startswith(f"[system] {messages[0]['content']}\n") and rendered.endswith("[assistant]")


def test_generation_and_scoring_see_the_tokens_training_sees(setup, tmp_path, monkeypatch):
    from mafl.backends.hf import HFBackend

    model_dir, template = setup
    _, rows = trainer_rows(model_dir, template, tmp_path)
    trained_prompts = [split(ids, labels)[0] for ids, labels in rows]

    backend = HFBackend(model_dir, chat_template=template, batch_size=8)
    seen = []
    generate = backend.base.generate

    def recording_generate(input_ids, attention_mask, **kwargs):
        seen.extend(row[mask.bool()].tolist() for row, mask in zip(input_ids, attention_mask))
        return generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    monkeypatch.setattr(backend.base, "generate", recording_generate)
    greedy = Sampling(temperature=0.0, max_new_tokens=2)
    backend.generate([GenerationRequest(m, sampling=greedy) for m, _ in EXAMPLES])  # one batch, left-padded
    assert len(trained_prompts[0]) != len(trained_prompts[1])
    assert sorted(seen) == sorted(trained_prompts)

    # a likelihood scores the response after exactly the training row's prompt
    scores = backend.score([ScoringRequest(m, response=r) for m, r in EXAMPLES])
    with torch.no_grad():
        for (ids, labels), score in zip(rows, scores):
            prompt, completion = split(ids, labels)
            logp = torch.log_softmax(backend.base(input_ids=torch.tensor([ids])).logits[0].float(), -1)
            expected = sum(float(logp[len(prompt) - 1 + k, t]) for k, t in enumerate(completion))
            assert score.num_tokens == len(completion)
            assert score.logprob == pytest.approx(expected, abs=1e-4)


def test_the_vllm_backend_sends_the_tokens_training_sees(setup, tmp_path, monkeypatch):
    """Contract: what the vLLM backend hands its engine (a fake one; see test_backend_vllm_contract.py)."""
    from fake_vllm import install

    from mafl.backends.vllm import VLLMBackend

    model_dir, template = setup
    _, rows = trainer_rows(model_dir, template, tmp_path)
    install(monkeypatch)
    backend = VLLMBackend(model_dir, chat_template=template)
    backend.generate([GenerationRequest(m) for m, _ in EXAMPLES])
    backend.score([ScoringRequest(m, response=r) for m, r in EXAMPLES])
    generated, scored = backend.llm.calls
    assert [p["prompt_token_ids"] for p in generated["prompts"]] == [split(i, lab)[0] for i, lab in rows]
    assert [p["prompt_token_ids"] for p in scored["prompts"]] == [ids for ids, _ in rows]


def test_example_ids_mask_exactly_the_response(tiny_model_dir):
    from mafl.models import load_tokenizer

    tok = load_tokenizer(str(tiny_model_dir))
    ids, mask = chat.example_ids(tok, CRITIC, "The answer is 19.")
    prompt = chat.prompt_ids(tok, CRITIC)
    assert ids[:len(prompt)] == prompt and mask == [0] * len(prompt) + [1] * (len(ids) - len(prompt))
    assert tok.decode(ids[len(prompt):]) == "The answer is 19." + tok.eos_token
    assert tok.decode(prompt).endswith("Again?<|end|><|assistant|>")
