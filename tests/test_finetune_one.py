"""Fine-tuning the tiny random Llama with trl: LoRA and full, loss mask, init, atomic output."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")
pytest.importorskip("peft")

from safetensors.torch import load_file  # noqa: E402

from mafl.finetune import FinetuneSet, build_trainer, finetune_model  # noqa: E402
from mafl.finetune.sets import Example  # noqa: E402
from mafl.finetune.finetune_one import RESULT_FILE  # noqa: E402

LORA = {"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": "all-linear", "bias": "none",
        "task_type": "CAUSAL_LM"}
TRAIN = {"max_steps": 2, "per_device_train_batch_size": 2, "learning_rate": 1e-2, "logging_steps": 1,
         "gradient_checkpointing": False}


def examples(n: int = 6) -> FinetuneSet:
    items = [
        Example(prompt=[{"role": "system", "content": "Solve it."}, {"role": "user", "content": f"What is {i}+{i}?"}],
                response=f"{i}+{i}={2 * i}. The answer is {2 * i}.", problem_id=str(i), correct=True)
        for i in range(n)
    ]
    return FinetuneSet("generator_0", items)


def files_digest(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def hidden_leftovers(parent) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(".")]


@pytest.fixture(scope="module")
def lora_run(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora") / "generator_0"
    before = files_digest(tiny_model_dir)
    result = finetune_model(str(tiny_model_dir), examples(), out, mode="lora", lora=LORA, train=TRAIN, seed=0)
    return result, out, before


def test_lora_step_changes_adapter_not_base(tiny_model_dir, tmp_path):
    trainer = build_trainer(str(tiny_model_dir), examples(), tmp_path / "work", mode="lora", lora=LORA,
                            train=TRAIN, seed=0)
    params = dict(trainer.model.named_parameters())
    before = {k: v.detach().clone() for k, v in params.items()}
    trainer.train()
    lora_keys = [k for k in params if "lora_" in k]
    base_keys = [k for k in params if "lora_" not in k]
    assert lora_keys and base_keys
    assert all(not params[k].requires_grad for k in base_keys)
    assert all(torch.equal(params[k], before[k]) for k in base_keys)
    changed = [k for k in lora_keys if not torch.equal(params[k], before[k])]
    assert any("lora_B" in k for k in changed) and any("lora_A" in k for k in changed)


def test_lora_run_saves_only_the_adapter(lora_run, tiny_model_dir):
    result, out, before = lora_run
    assert result.trained and result.num_examples == 6 and result.global_step == 2
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in out.iterdir()}
    assert not (out / "model.safetensors").exists() and not (out / "tokenizer.json").exists()
    weights = load_file(out / "adapter_model.safetensors")
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)  # lora_B starts at zero: training moved it
    assert files_digest(tiny_model_dir) == before  # the base model on disk is untouched
    assert hidden_leftovers(out.parent) == []  # temporary folders removed
    assert (out / RESULT_FILE).exists()


def test_losses_are_recorded_per_step(lora_run):
    result, _, _ = lora_run
    logged = [h["loss"] for h in result.log_history if "loss" in h]
    assert len(result.losses) == result.global_step == len(logged)
    assert result.losses == pytest.approx(logged, rel=1e-3)
    assert all(loss > 0 for loss in result.losses) and result.train_runtime > 0


def test_loss_mask_covers_only_the_response(tiny_model_dir, tmp_path):
    data = examples(3)
    trainer = build_trainer(str(tiny_model_dir), data, tmp_path / "work", mode="lora", lora=LORA, train=TRAIN)
    tok = trainer.processing_class
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    for row, ex in enumerate(data.examples):
        prompt_ids = list(tok.apply_chat_template(ex.prompt, add_generation_prompt=True, tokenize=True,
                                                  return_dict=True)["input_ids"])
        ids, labels = batch["input_ids"][row], batch["labels"][row]
        n = int(batch["attention_mask"][row].sum())
        p = len(prompt_ids)
        assert ids[:p].tolist() == prompt_ids  # the prompt comes first, rendered as at inference
        assert (labels[:p] == -100).all()  # no loss on the prompt
        assert labels[p:n].tolist() == ids[p:n].tolist()  # loss on every response token
        assert (labels[n:] == -100).all()  # nor on padding
        assert tok.decode(ids[p:n]).startswith(ex.response)
        assert int(labels[n - 1]) == tok.eos_token_id  # the response ends with eos


def test_full_mode_changes_the_weights(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "full"
    result = finetune_model(str(tiny_model_dir), examples(), out, mode="full", train=TRAIN, seed=0)
    assert result.trained and (out / "tokenizer.json").exists() and (out / "config.json").exists()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    tuned = AutoModelForCausalLM.from_pretrained(out).state_dict()
    assert base.keys() == tuned.keys()
    assert any(not torch.equal(base[k], tuned[k]) for k in base)
    # continue from that full model: with learning rate 0 the weights are exactly the previous ones
    again = tmp_path / "full_again"
    finetune_model(str(tiny_model_dir), examples(), again, mode="full", init_adapter=str(out),
                   train={**TRAIN, "max_steps": 1, "learning_rate": 0.0})
    cont = AutoModelForCausalLM.from_pretrained(again).state_dict()
    assert all(torch.equal(cont[k], tuned[k]) for k in tuned)


def test_init_adapter_continues_from_the_adapter(lora_run, tiny_model_dir, tmp_path):
    _, prev, _ = lora_run
    prev_w = load_file(prev / "adapter_model.safetensors")
    # learning rate 0: the continued adapter is exactly the previous one (a fresh one would have lora_B = 0);
    # the previous adapter's own config applies (r=4), whatever `lora` says
    frozen = finetune_model(str(tiny_model_dir), examples(), tmp_path / "same", mode="lora", init_adapter=str(prev),
                            lora={**LORA, "r": 8}, train={**TRAIN, "max_steps": 1, "learning_rate": 0.0})
    same_w = load_file(frozen.out_dir / "adapter_model.safetensors")
    assert same_w.keys() == prev_w.keys()
    assert all(torch.equal(same_w[k], prev_w[k]) for k in prev_w)
    moved = finetune_model(str(tiny_model_dir), examples(), tmp_path / "moved", mode="lora",
                           init_adapter=str(prev), train={**TRAIN, "max_steps": 1})
    moved_w = load_file(moved.out_dir / "adapter_model.safetensors")
    assert any(not torch.equal(moved_w[k], prev_w[k]) for k in prev_w)
    assert load_file(prev / "adapter_model.safetensors").keys() == prev_w.keys()  # the init folder untouched


def test_zero_examples_keeps_the_init_weights(lora_run, tiny_model_dir, tmp_path):
    _, prev, _ = lora_run
    empty = FinetuneSet("critic_0", [])
    fresh = finetune_model(str(tiny_model_dir), empty, tmp_path / "fresh", mode="lora", lora=LORA, train=TRAIN)
    assert not fresh.trained and fresh.num_examples == 0 and fresh.losses == []
    weights = load_file(tmp_path / "fresh" / "adapter_model.safetensors")
    assert weights and all(v.abs().sum() == 0 for k, v in weights.items() if "lora_B" in k)  # identity adapter
    kept = finetune_model(str(tiny_model_dir), empty, tmp_path / "kept", mode="lora", init_adapter=str(prev))
    assert not kept.trained
    prev_w, kept_w = load_file(prev / "adapter_model.safetensors"), load_file(kept.out_dir / "adapter_model.safetensors")
    assert all(torch.equal(kept_w[k], prev_w[k]) for k in prev_w)


def test_hydra_configs_pass_straight_through(tiny_model_dir, tmp_path):
    from omegaconf import OmegaConf

    trainer = build_trainer(str(tiny_model_dir), examples(2), tmp_path / "work", mode="lora",
                            lora=OmegaConf.create({**LORA, "target_modules": ["q_proj", "v_proj"]}),
                            train=OmegaConf.create({**TRAIN, "warmup_steps": 0.1}), seed=7)
    assert trainer.args.warmup_steps == 0.1 and trainer.args.seed == 7 and trainer.args.use_cpu
    assert trainer.args.report_to in ([], "none", ["none"]) and not trainer.args.bf16
    assert set(trainer.model.peft_config["default"].target_modules) == {"q_proj", "v_proj"}


def test_failed_finetune_leaves_no_partial_folder(tiny_model_dir, tmp_path, monkeypatch, lora_run):
    import transformers

    _, prev, _ = lora_run
    out = tmp_path / "generator_0"

    def boom(self, *args, **kwargs):
        raise RuntimeError("killed mid-training")

    monkeypatch.setattr(transformers.Trainer, "train", boom)
    with pytest.raises(RuntimeError, match="killed"):
        finetune_model(str(tiny_model_dir), examples(), out, mode="lora", lora=LORA, train=TRAIN)
    assert not out.exists() and list(tmp_path.iterdir()) == []
    # a failure never damages a finished folder already in place
    import shutil

    shutil.copytree(prev, out)
    before = files_digest(out)
    with pytest.raises(RuntimeError, match="killed"):
        finetune_model(str(tiny_model_dir), examples(), out, mode="lora", lora=LORA, train=TRAIN)
    assert files_digest(out) == before and hidden_leftovers(tmp_path) == []


@pytest.mark.parametrize("name", ["lora", "full"])
def test_shipped_finetune_configs_are_accepted(name, tiny_model_dir, tmp_path):
    from omegaconf import OmegaConf

    folder = Path(__file__).resolve().parents[1] / "mafl" / "conf" / "finetune"
    conf = OmegaConf.load(folder / "lora.yaml")
    if name == "full":
        full = OmegaConf.load(folder / "full.yaml")
        conf = OmegaConf.merge(conf, {k: v for k, v in full.items() if k != "defaults"})
    trainer = build_trainer(str(tiny_model_dir), examples(2), tmp_path / "work", mode=conf.mode, lora=conf.lora,
                            train=conf.train, seed=0)
    assert trainer.args.learning_rate == conf.train.learning_rate
    assert hasattr(trainer.model, "peft_config") == (name == "lora")


def completion_nll(model, tok, items) -> tuple[float, int]:
    """Summed negative log-likelihood of the responses' tokens (and eos) and their count, one forward pass each."""
    from mafl.backends.chat import example_ids

    total, count = 0.0, 0
    with torch.no_grad():
        for e in items:
            ids, mask = example_ids(tok, e.prompt, e.response)
            logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
            for k in range(1, len(ids)):
                if mask[k]:
                    total -= float(logp[k - 1, ids[k]])
                    count += 1
    return total, count


def test_gradient_accumulation_records_the_loss_of_each_optimizer_step(tiny_model_dir, tmp_path):
    """Three micro-batches of one example make one optimizer step: its recorded loss is the mean over every
    response token of the three (what the trainer logs), not the last micro-batch's share of it."""
    from transformers import AutoModelForCausalLM

    prompt = [{"role": "user", "content": "What is 3+4*5+6-7*8?"}]
    responses = ["-27.", "The answer is -27.", "4*5=20, 7*8=56, 3+20=23, 23+6=29, 29-56=-27. The answer is -27."]
    data = FinetuneSet("generator_0", [Example(prompt=prompt, response=r, problem_id=str(i), correct=True)
                                       for i, r in enumerate(responses)])
    train = {**TRAIN, "max_steps": 1, "per_device_train_batch_size": 1, "gradient_accumulation_steps": 3}
    result = finetune_model(str(tiny_model_dir), data, tmp_path / "ga", mode="lora", lora=LORA, train=train)
    logged = [h["loss"] for h in result.log_history if "loss" in h]
    # the step's three forward passes all see the initial weights, where a fresh adapter (lora_B = 0) is the base
    from mafl.models import load_tokenizer

    total, count = completion_nll(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                  load_tokenizer(str(tiny_model_dir)), data.examples)
    assert result.global_step == 1 and len(result.losses) == 1
    assert result.losses[0] == pytest.approx(total / count, rel=1e-4)
    assert result.losses == pytest.approx(logged, rel=1e-3)
    # two steps of accumulation: one loss per optimizer step, as logged
    twice = finetune_model(str(tiny_model_dir), FinetuneSet("g", data.examples * 2), tmp_path / "ga2", mode="lora",
                           lora=LORA, train={**train, "max_steps": 2})
    assert len(twice.losses) == twice.global_step == 2
    assert twice.losses == pytest.approx([h["loss"] for h in twice.log_history if "loss" in h], rel=1e-3)


def test_device_auto_trains_on_the_gpu_when_there_is_one(tiny_model_dir, tmp_path, monkeypatch):
    trainer = build_trainer(str(tiny_model_dir), examples(2), tmp_path / "work", mode="lora", lora=LORA,
                            train=TRAIN, device="auto")
    assert trainer.args.use_cpu == (not torch.cuda.is_available())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert build_trainer(str(tiny_model_dir), examples(2), tmp_path / "w2", mode="lora", lora=LORA, train=TRAIN,
                         device="auto").args.use_cpu


def test_a_multi_turn_prompt_trains_on_its_final_response_only(tiny_model_dir, tmp_path):
    """A critic's whole conversation (system, user, assistant, user) as the prompt: the earlier assistant turn is
    context, masked like the rest of the prompt."""
    earlier = "12+7=18. The answer is 18."
    prompt = [{"role": "system", "content": "Check."}, {"role": "user", "content": "What is 12+7?"},
              {"role": "assistant", "content": earlier}, {"role": "user", "content": "Agent 1 says 19. Again?"}]
    data = FinetuneSet("critic_0", [Example(prompt=prompt, response="The answer is 19.", problem_id="0",
                                            correct=True)])
    trainer = build_trainer(str(tiny_model_dir), data, tmp_path / "work", mode="lora", lora=LORA, train=TRAIN)
    tok = trainer.processing_class
    row = trainer.train_dataset[0]
    trained = [t for t, label in zip(row["input_ids"], row["labels"]) if label != -100]
    assert tok.decode(trained) == "The answer is 19." + tok.eos_token
    assert earlier in tok.decode(row["input_ids"])


def test_an_example_longer_than_max_length_is_left_out_and_counted(tiny_model_dir, tmp_path):
    """trl cuts a row past max_length from the right, which cuts the response it is trained to give (a critic's
    long context left nothing of it): such examples are left out, counted, and the others keep their whole
    response."""
    data = examples(4)
    long_context = [{"role": "system", "content": "Solve it."},
                    {"role": "user", "content": "These are the answers of other agents: " + "12 " * 400}]
    data.examples.insert(1, Example(prompt=long_context, response="The answer is 12.", problem_id="long",
                                    correct=True))
    trainer = build_trainer(str(tiny_model_dir), data, tmp_path / "work", mode="lora", lora=LORA,
                            train={**TRAIN, "max_length": 300})
    assert trainer.examples_too_long == 1 and len(trainer.train_dataset) == 4
    # each row ends with its response's last token and eos, both trained on
    assert all(len(row["input_ids"]) <= 300 and row["labels"][-2:] == row["input_ids"][-2:] != [-100, -100]
               for row in trainer.train_dataset)
    with pytest.raises(ValueError, match="every example is longer than finetune.train.max_length=10 tokens"):
        build_trainer(str(tiny_model_dir), data, tmp_path / "work2", mode="lora", lora=LORA,
                      train={**TRAIN, "max_length": 10})
    result = finetune_model(str(tiny_model_dir), data, tmp_path / "out", mode="lora", lora=LORA,
                            train={**TRAIN, "max_length": 300})
    assert result.examples_too_long == 1 and result.num_examples == 5
