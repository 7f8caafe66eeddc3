"""The embedded model: its corpus, its tokenizer, and the build-once cache of ensure_tiny_model."""
from __future__ import annotations

import random
import re

import pytest

from mafl.tiny import ensure_tiny_model, read_recipe, tiny_model_key
from mafl.tiny.corpus import (ArithmeticProblem, conversation, eval_problems, load_prompts, random_problem,
                              solve)
from mafl.tiny.evaluate import final_answer

SMALL = dict(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
             steps=20, batch_size=8, warmup_steps=5)
ENDING = re.compile(r"The answer is (-?\d+)\.$")


WORKED = re.compile(r"(\d+)\*(\d+)=(\d+), (\d+)\*(\d+)=(\d+), (\d+)\+(\d+)=(\d+), (\d+)\+(\d+)=(\d+), "
                    r"(\d+)-(\d+)=(-?\d+)\. The answer is (-?\d+)\.")


def _check_steps(text: str, p: ArithmeticProblem | None = None) -> int:
    """Every step of a worked answer is true and uses the steps before it; returns the stated answer."""
    m = WORKED.fullmatch(text)
    assert m, text
    b, c, p1, e, f, p2, a, d, q, q_, p1_, t, t_, p2_, r, answer = (int(x) for x in m.groups())
    assert p1 == b * c and p2 == e * f and q == a + d
    assert (q_, p1_) == (q, p1) and t == q + p1
    assert (t_, p2_) == (t, p2) and r == t - p2 == answer
    if p is not None:
        assert (a, b, c, d, e, f) == (p.a, p.b, p.c, p.d, p.e, p.f)
    return answer


def test_correct_worked_answers_are_true_and_end_with_the_answer():
    rng = random.Random(1)
    problems = [random_problem(rng) for _ in range(300)] + [ArithmeticProblem(0, 0, 0, 0, 29, 29)]
    for p in problems:
        text, answer = solve(p)
        assert answer == p.answer == p.a + p.b * p.c + p.d - p.e * p.f
        assert ENDING.search(text) and int(ENDING.search(text)[1]) == p.answer
        assert final_answer(text) == p.answer
        assert _check_steps(text, p) == p.answer
    assert ENDING.search(solve(ArithmeticProblem(0, 0, 0, 0, 29, 29))[0])[1] == "-841"


def test_question_and_prompts_come_from_the_dataset_config():
    prompts = load_prompts()
    p = ArithmeticProblem(3, 4, 5, 6, 7, 8)
    assert p.question == "What is the result of 3+4*5+6-7*8?"
    chat = conversation("round1", p, random.Random(0), prompts)
    assert [m["role"] for m in chat] == ["system", "user", "assistant"]
    assert chat[0]["content"] == prompts["system_generator"]
    assert chat[1]["content"] == prompts["round1"].format(question=p.question)
    assert final_answer(chat[2]["content"]) == -27


def test_debate_and_summary_conversations_carry_the_others_answers():
    """The corpus speaks the debate's format: a later round continues the agent's own conversation (its round-1
    answer, sometimes wrong, then the others' answers or their summary), and a summary answers a single user turn."""
    prompts, rng = load_prompts(), random.Random(3)
    head = prompts["other"].split("{agent}")[0]
    wrong_seen = own_wrong = 0
    for _ in range(100):
        p = random_problem(rng)
        debate = conversation("debate", p, rng, prompts)
        assert [m["role"] for m in debate] == ["system", "user", "assistant", "user", "assistant"]
        assert debate[0]["content"] == prompts["system_critic"]
        assert debate[1]["content"] == prompts["round1"].format(question=p.question)
        own_wrong += final_answer(debate[2]["content"]) != p.answer
        user = debate[3]["content"]
        assert user.startswith(p.question) and user.endswith(prompts["debate"].split("{others}")[1])
        others = re.findall(rf"^{re.escape(head)}(\d+): (.*)$", user, flags=re.M)
        assert 1 <= len(others) <= 4 and all(final_answer(text) is not None for _, text in others)
        wrong_seen += sum(final_answer(text) != p.answer for _, text in others)
        assert final_answer(debate[4]["content"]) == p.answer

        summarize = conversation("summarize", p, rng, prompts)
        assert [m["role"] for m in summarize] == ["user", "assistant"]  # as the summariser is asked
        others = re.findall(rf"^{re.escape(head)}(\d+): (.*)$", summarize[0]["content"], flags=re.M)
        expected = " ".join(f"Agent {agent} says {final_answer(text)}." for agent, text in others)
        assert summarize[1]["content"] == expected

        after = conversation("debate_summary", p, rng, prompts)
        assert [m["role"] for m in after] == ["system", "user", "assistant", "user", "assistant"]
        assert prompts["summary"].split("{summary}")[0] in after[3]["content"]
        assert re.search(r"Agent \d says -?\d+\.", after[3]["content"])
        assert final_answer(after[4]["content"]) == p.answer
    assert 40 < wrong_seen < 150 and 25 < own_wrong < 60


def test_the_corpus_renders_what_the_debate_engine_sends(tmp_path):
    """A corpus debate conversation has the same message layout as a round-2 turn of the engine."""
    from helpers import ScriptedBackend, compose_cfg
    from mafl.debate.settings import DebateSettings
    from mafl.debate.engine import run_debate
    from mafl.tasks.prompts import Prompts
    from mafl.debate.society import Society
    from mafl.tasks import get_task
    from mafl.tasks.base import Problem

    cfg = compose_cfg(["debate.agents=2"])
    s, engine_prompts = DebateSettings.from_cfg(cfg.debate), Prompts.from_cfg(cfg.dataset.prompts)
    prompts, rng = load_prompts(), random.Random(0)
    p = random_problem(rng)
    reply = lambda r: "Agent 1 says 3." if "Summarize" in r.messages[-1]["content"] else solve(p)[0]  # noqa: E731
    (t,) = run_debate(ScriptedBackend(reply), get_task("arithmetic"), [Problem("x", p.question, str(p.answer))],
                      Society(agents=2), s, engine_prompts, seed=0, out_dir=tmp_path, progress=False)
    turn = t.rounds[1][0]
    corpus = conversation("debate_summary" if s.summarize else "debate", p, rng, prompts)
    assert [m["role"] for m in turn.messages] == [m["role"] for m in corpus[:-1]]
    assert turn.messages[0] == corpus[0] and turn.messages[1] == corpus[1]
    head = prompts["summary"].split("{summary}")[0] if s.summarize else prompts["other"].split("{agent}")[0]
    assert head in turn.messages[3]["content"] and head in corpus[3]["content"]


def test_eval_problems_differ_from_the_corpus_stream():
    a, b = eval_problems(50, seed=0), eval_problems(50, seed=0)
    assert a == b and len(set(a)) == 50
    assert all(0 <= v <= 29 for p in a for v in (p.a, p.b, p.c, p.d, p.e, p.f))
    assert eval_problems(50, seed=1) != a


def test_final_answer_reads_the_last_stated_integer_like_the_arithmetic_task():
    from mafl.tasks.arithmetic import ArithmeticTask

    assert final_answer("12*2=24. The answer is 3. No: The answer is -27.") == -27
    assert final_answer("The answer is 1,234.") == 1234
    assert final_answer("no answer here") is None and final_answer("The answer is 2.5") is None
    text = "4*5=20, 7*8=56. The answer is -36, I think"
    assert str(final_answer(text)) == ArithmeticTask().extract_answer(text)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    home = tmp_path_factory.mktemp("mafl_home")
    return home, ensure_tiny_model(SMALL, home=home, progress=False)


def test_tokenizer_round_trips_text_and_renders_the_chat(built):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(built[1])
    for text in ["What is the result of 3+4*5+6-7*8?", "héllo wörld — 数学 🚀\n\ttabs  and  spaces", "-841"]:
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    assert tok.pad_token_id != tok.eos_token_id and tok.eos_token == "<|end|>" and tok.pad_token == "<|pad|>"
    rendered = tok.apply_chat_template([{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}],
                                       add_generation_prompt=True, tokenize=False)
    assert rendered == "<|system|>S<|end|><|user|>Q<|end|><|assistant|>"
    batch = tok(["a", "a much longer text 123"], padding=True, add_special_tokens=False)
    assert tok.padding_side == "left"
    assert batch["input_ids"][0][0] == tok.pad_token_id and batch["attention_mask"][0][0] == 0
    assert batch["input_ids"][1][0] != tok.pad_token_id


def test_every_number_below_1000_is_one_token(built):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(built[1])
    ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    assert all(len(ids(str(n))) == 1 for n in range(1000))
    assert len(ids("1234")) == 2 and len(ids("0 4 4")) == 5 and tok.decode(ids("-841")) == "-841"
    # every question has the same token layout, whatever its numbers
    layouts = {tuple(tok.convert_ids_to_tokens(ids(p.question))[:1]) + (len(ids(p.question)),)
               for p in eval_problems(50)}
    assert len(layouts) == 1


def test_ensure_tiny_model_builds_once_and_loads_like_any_model(built, tmp_path, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    import mafl.tiny.pretrain as pretrain_module

    home, path = built
    assert path.parent.name == "tiny" and path.name == tiny_model_key(SMALL)
    info = read_recipe(path)
    assert info["pretrain_seconds"] > 0 and info["recipe"]["steps"] == 20
    stamp = (path / "recipe.json").stat().st_mtime_ns

    calls = []
    real = pretrain_module.pretrain
    monkeypatch.setattr(pretrain_module, "pretrain", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert ensure_tiny_model(dict(SMALL), home=home, progress=False) == path
    assert calls == [] and (path / "recipe.json").stat().st_mtime_ns == stamp

    gen = GenerationConfig.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert gen.eos_token_id == tok.eos_token_id and gen.pad_token_id == tok.pad_token_id
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    ids = tok(["What is the result of 1+2*3+4-5*6?"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(ids).logits
    model.save_pretrained(tmp_path / "copy")
    with torch.no_grad():
        again = AutoModelForCausalLM.from_pretrained(tmp_path / "copy").eval()(ids).logits
    assert torch.equal(logits, again)

    assert ensure_tiny_model(SMALL, home=home, rebuild=True, progress=False) == path
    assert calls == [1] and not list(path.parent.glob(f".{path.name}*"))


def test_same_recipe_gives_identical_weights_and_another_recipe_another_model(built, tmp_path):
    from safetensors.torch import load_file

    home, path = built
    twin = ensure_tiny_model(SMALL, home=tmp_path, progress=False)
    first, second = load_file(path / "model.safetensors"), load_file(twin / "model.safetensors")
    assert first.keys() == second.keys() and all((first[k] == second[k]).all() for k in first)
    other = {**SMALL, "seed": 1}
    assert tiny_model_key(other) != tiny_model_key(SMALL)
    with pytest.raises(ValueError, match="unknown tiny recipe keys"):
        tiny_model_key({**SMALL, "hiden_size": 8})


def test_a_built_model_records_its_weights_hash_and_what_built_it(built, tmp_path):
    import json
    import shutil

    import torch

    from mafl.model_weights import base_weights
    from mafl.tiny import tiny_weights, weights_sha256
    from mafl.tiny.pretrain import this_cpu

    _, path = built
    info = read_recipe(path)
    assert len(info["weights_sha256"]) == 64 and info["weights_sha256"] == weights_sha256(path)
    assert info["built_with"] == {"torch": torch.__version__, "threads": torch.get_num_threads(),
                                  "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu": this_cpu()}
    assert this_cpu()  # some name for the processor on every platform
    # a run names the weights its agents start from; models mafl did not build have none
    sha = info["weights_sha256"]
    assert base_weights([str(path)]) == sha and base_weights([str(path), "org/a-hub-model", str(path)]) == f"{sha}+?+{sha}"
    assert base_weights(["org/a-hub-model"]) is None and base_weights([str(tmp_path)]) is None
    # a model built before the hash was recorded is hashed from its file; other bytes, another hash
    old = tmp_path / "old"
    shutil.copytree(path, old)
    (old / "recipe.json").write_text(json.dumps({k: v for k, v in info.items() if k != "weights_sha256"}))
    assert tiny_weights(old) == info["weights_sha256"]
    data = bytearray((old / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (old / "model.safetensors").write_bytes(bytes(data))
    assert tiny_weights(old) != info["weights_sha256"]


def test_number_embeddings_start_as_place_value_sums():
    import torch

    from mafl.tiny.pretrain import Recipe, build_model
    from mafl.tiny.tokenizer import build_tokenizer

    tok = build_tokenizer(["What is the result of 3+4*5+6-7*8?"] * 20, vocab_size=300)
    emb = lambda model, n: model.get_input_embeddings().weight[tok.convert_tokens_to_ids(str(n))]  # noqa: E731
    model = build_model(Recipe(**{**SMALL, "place_value_init": True}), tok)
    # the same change of the ones digit moves every number the same way; a tens change moves it elsewhere
    assert torch.allclose(emb(model, 123) - emb(model, 124), emb(model, 873) - emb(model, 874), atol=1e-6)
    assert not torch.allclose(emb(model, 123) - emb(model, 124), emb(model, 123) - emb(model, 133), atol=1e-3)
    plain = build_model(Recipe(**{**SMALL, "place_value_init": False}), tok)
    assert not torch.allclose(emb(plain, 123) - emb(plain, 124), emb(plain, 873) - emb(plain, 874), atol=1e-3)


def test_frozen_number_embeddings_keep_their_place_value_start_while_the_rest_learns(tmp_path):
    from safetensors.torch import load_file

    from mafl.tiny.pretrain import Recipe, build_model, pretrain
    from mafl.tiny.tokenizer import number_token_ids

    recipe = Recipe(**{**SMALL, "steps": 3, "freeze_numbers": True})
    pretrain(recipe, tmp_path, progress=False)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tmp_path)
    start = build_model(recipe, tok).get_input_embeddings().weight.detach()
    trained = load_file(tmp_path / "model.safetensors")["model.embed_tokens.weight"]
    numbers = number_token_ids(tok)
    others = [i for i in range(len(tok)) if i not in set(numbers)]
    assert (trained[numbers] == start[numbers]).all()
    assert not (trained[others] == start[others]).all()


def test_drills_can_practise_only_the_two_multi_digit_steps():
    from mafl.tiny.corpus import drill

    facts = drill(random.Random(0), 40, big_share=1.0)
    sums, differences = facts[0::2], facts[1::2]
    assert all("+" in q and "*" not in q for q, _ in sums) and any(int(r) >= 100 for _, r in sums)
    for (s, s_result), (d, d_result) in zip(sums, differences):
        x, y = (int(v) for v in s[:-1].split("+"))
        assert int(s_result) == x + y and d.startswith(f"{x + y}-")
        assert int(d_result) == x + y - int(d[:-1].split("-")[1])
    mixed = drill(random.Random(0), 40)
    assert any("*" in q for q, _ in mixed)


def test_place_value_scale_stretches_the_digit_vectors():
    import torch

    from mafl.tiny.pretrain import Recipe, build_model
    from mafl.tiny.tokenizer import build_tokenizer

    tok = build_tokenizer(["What is the result of 3+4*5+6-7*8?"] * 20, vocab_size=300)
    step = lambda m: (m.get_input_embeddings().weight[tok.convert_tokens_to_ids("123")]  # noqa: E731
                      - m.get_input_embeddings().weight[tok.convert_tokens_to_ids("124")])
    one = build_model(Recipe(**{**SMALL, "place_value_scale": 1.0}), tok)
    three = build_model(Recipe(**{**SMALL, "place_value_scale": 3.0}), tok)
    assert torch.allclose(step(three), 3 * step(one), atol=1e-6)


def test_the_corpus_asks_the_arithmetic_tasks_questions_with_the_debates_prompts():
    """The tiny model is pretrained on the question text and round-1 prompt that the Arithmetic task and the
    debate give it: the same operands make the same question, answer and messages."""
    from helpers import compose_cfg

    from mafl.tasks.prompts import Prompts
    from mafl.tasks import get_task
    from mafl.tasks.arithmetic import arithmetic_problems

    cfg = compose_cfg(["dataset=arithmetic"])
    debate_prompts = Prompts.from_cfg(cfg.dataset.prompts)
    train, eval_ = arithmetic_problems(20, 20, eval_seed=5, train_seed=6)
    task = get_task("arithmetic")
    for problem in train + eval_:
        p = ArithmeticProblem(*problem.meta["operands"])
        assert p.question == problem.question
        assert task.is_equivalent(str(p.answer), problem.answer)
        chat = conversation("round1", p, random.Random(0), load_prompts())
        assert chat[:2] == debate_prompts.first_round(problem.question)
        assert final_answer(chat[2]["content"]) == p.answer


def test_pretraining_rows_train_on_the_reply_after_the_prompt_generation_sends(tiny_model_dir):
    """A pretraining conversation is tokenized as generation tokenizes its prompt: the prompt (loss-free) is
    ``chat.prompt_ids`` of its messages, and the loss covers the reply and its eos only."""
    from mafl.backends.chat import prompt_ids
    from mafl.models import load_tokenizer
    from mafl.tiny.pretrain import _encode

    tok, prompts, rng = load_tokenizer(str(tiny_model_dir)), load_prompts(), random.Random(1)
    for kind in ("round1", "debate", "summarize", "debate_summary"):
        chat = conversation(kind, random_problem(rng), rng, prompts)
        ids, labels = _encode(tok, chat)
        prompt = prompt_ids(tok, chat[:-1])
        assert ids[:len(prompt)] == prompt and all(label == -100 for label in labels[:len(prompt)])
        assert labels[len(prompt):] == ids[len(prompt):]
        assert tok.decode(ids[len(prompt):]) == chat[-1]["content"] + tok.eos_token


def test_the_processor_is_named_from_the_first_block_of_cpuinfo():
    from mafl.tiny.pretrain import describe_cpu

    amd = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\nmodel name\t: AMD EPYC\n"
           "flags\t\t: fpu avx512f\n\nprocessor\t: 1\nvendor_id\t: OtherVendor\nmodel\t\t: 99\n")
    assert describe_cpu(amd) == "AuthenticAMD AMD EPYC (family 25, model 17)"
    intel = "vendor_id : GenuineIntel\nmodel name : Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz\n"
    assert describe_cpu(intel) == "GenuineIntel Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz"
    assert describe_cpu("", fallback="arm64") == describe_cpu("flags : neon\n", fallback="arm64") == "arm64"
