"""DPO of the tiny random Llama on preference pairs with trl: the adapter changes and the base does not (also when a
shared base model is lent), pre-tokenized rows, a continued adapter, no pairs, sft+dpo, and the config checks."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")
pytest.importorskip("peft")

from safetensors.torch import load_file  # noqa: E402

from helpers import compose_cfg, train_checking_lora  # noqa: E402
from mafl.pipeline import validate  # noqa: E402
from mafl.errors import ConfigError  # noqa: E402
from mafl.finetune.dpo import build_dpo_trainer  # noqa: E402
from mafl.finetune.pairs import Pair, PairSet  # noqa: E402
from mafl.finetune.finetune_one import SharedBase, finetune_model  # noqa: E402
from test_finetune_one import LORA, examples  # noqa: E402

DPO = {"max_steps": 3, "per_device_train_batch_size": 2, "learning_rate": 5e-2, "logging_steps": 1, "beta": 0.1,
       "gradient_checkpointing": False}


def pairs(n: int = 6) -> PairSet:
    items = [Pair(prompt=[{"role": "system", "content": "Solve it."}, {"role": "user", "content": f"What is {i}+{i}?"}],
                  chosen=f"{i}+{i}={2 * i}. The answer is {2 * i}.", rejected=f"{i}+{i}={2 * i + 1}. The answer is "
                  f"{2 * i + 1}.", problem_id=str(i), chosen_correct=True, rejected_correct=False)
             for i in range(n)]
    return PairSet("generator_0", items)


def state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_dpo_step_changes_the_adapter_not_the_base(tiny_model_dir, tmp_path):
    from mafl.backends.chat import prompt_ids, response_ids

    trainer = build_dpo_trainer(str(tiny_model_dir), pairs(), tmp_path / "work", lora=LORA, dpo=DPO, seed=0)
    row, first = trainer.train_dataset[0], pairs().pairs[0]
    tok = trainer.processing_class
    assert row["prompt_ids"] == prompt_ids(tok, first.prompt)  # the tokens the model generates from
    assert row["chosen_ids"] == response_ids(tok, first.chosen) and row["rejected_ids"] == response_ids(tok, first.rejected)
    train_checking_lora(trainer)
    logged = [h for h in trainer.state.log_history if "rewards/accuracies" in h]
    assert logged


def test_dpo_through_a_shared_base_leaves_it_unchanged_and_saves_only_the_adapter(tiny_model_dir, tmp_path):
    base = SharedBase(str(tiny_model_dir))
    with base.lend() as model:
        original = state(model)
    first = finetune_model(str(tiny_model_dir), examples(), tmp_path / "it1", lora=LORA, objective="dpo",
                           pairs=pairs(), dpo=DPO, seed=0, base=base)
    assert first.trained and first.objective == "dpo" and first.num_pairs == 6 and len(first.losses) == 3
    assert first.dpo_metrics["rewards/accuracies"]["last"] is not None
    # iteration 2: the adapter continues; trl's frozen reference copy is not saved
    second = finetune_model(str(tiny_model_dir), examples(), tmp_path / "it2", init_adapter=str(tmp_path / "it1"),
                            objective="dpo", pairs=pairs(), dpo=DPO, seed=1, base=base)
    assert second.trained and second.losses[0] == pytest.approx(0.6931, abs=1e-3)  # policy == reference at start
    assert sorted(p.name for p in (tmp_path / "it2").iterdir() if p.is_dir()) == []
    w1, w2 = (load_file(tmp_path / d / "adapter_model.safetensors") for d in ("it1", "it2"))
    assert w1.keys() == w2.keys() and any(not torch.equal(w1[k], w2[k]) for k in w1)
    assert base.loads == 1
    with base.lend() as model:
        after = state(model)
    assert after.keys() == original.keys() and all(torch.equal(after[k], original[k]) for k in original)


def test_no_pairs_keeps_the_init_weights(tiny_model_dir, tmp_path):
    fresh = finetune_model(str(tiny_model_dir), examples(), tmp_path / "fresh", lora=LORA, objective="dpo",
                           pairs=PairSet("critic_0"), dpo=DPO)
    assert not fresh.trained and fresh.num_pairs == 0
    weights = load_file(tmp_path / "fresh" / "adapter_model.safetensors")
    assert all(v.abs().sum() == 0 for k, v in weights.items() if "lora_B" in k)


def test_sft_then_dpo_trains_both_stages_from_the_sft_result(tiny_model_dir, tmp_path):
    result = finetune_model(str(tiny_model_dir), examples(), tmp_path / "both", lora=LORA, objective="sft+dpo",
                            pairs=pairs(), dpo=DPO, train={"max_steps": 2, "per_device_train_batch_size": 2,
                                                           "learning_rate": 1e-2, "gradient_checkpointing": False})
    assert result.trained and result.objective == "sft+dpo" and result.num_examples == 6 and result.num_pairs == 6
    assert result.sft["trained"] and len(result.sft["losses"]) == 2 and len(result.losses) == 3
    assert result.init is None
    # the DPO stage's reference is the SFT result: its first loss is log 2
    assert result.losses[0] == pytest.approx(0.6931, abs=1e-3)
    assert [p.name for p in tmp_path.iterdir()] == ["both"]  # the SFT stage's folder is gone


def test_objective_and_dpo_settings_are_checked(tmp_path):
    with pytest.raises(ConfigError, match=r"^finetune.objective: 'ppo' is not one of sft, dpo, sft\+dpo, grpo$"):
        validate(compose_cfg(["finetune.objective=ppo"]))
    with pytest.raises(ConfigError, match=r"^finetune.dpo.betta: unknown key; not an argument of trl DPOConfig$"):
        validate(compose_cfg(["method=multiagent_dpo", "+finetune.dpo.betta=0.1"]))
    with pytest.raises(ConfigError, match=r"^finetune.objective: method star trains with sft \(got dpo\)$"):
        validate(compose_cfg(["method=star", "finetune.objective=dpo"]))
    with pytest.raises(ConfigError, match="^finetune.mix_general: general data mixes into the SFT sets"):
        general = tmp_path / "general.jsonl"
        general.write_text('{"question": "Hi?", "answer": "Hello."}\n')
        validate(compose_cfg(["method=multiagent_dpo", f"finetune.mix_general={{path: {general}, eta: 0.5}}"]))
    validate(compose_cfg(["method=multiagent_dpo", "finetune.objective=sft+dpo",
                          f"finetune.mix_general={{path: {general}, eta: 0.5}}"]))


def test_each_method_trains_with_its_objective_unless_told():
    assert validate(compose_cfg(["method=multiagent_dpo"])).finetune.objective == "dpo"
    assert validate(compose_cfg(["method=majority_dpo"])).finetune.objective == "dpo"
    assert validate(compose_cfg(["method=multiagent_ft"])).finetune.objective == "sft"
    assert validate(compose_cfg(["method=multiagent_ft", "finetune.objective=sft+dpo"])).finetune.objective == "sft+dpo"
    assert validate(compose_cfg(["method=multiagent_dpo", "finetune.objective=sft"])).finetune.objective == "sft"


def test_the_api_launcher_refuses_dpo(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with pytest.raises(ConfigError, match="^finetune.objective: launcher=openai runs SFT jobs only"):
        validate(compose_cfg(["method=multiagent_dpo", "finetune=openai", "backend=openai", "model=gpt35"]))


def test_multiagent_dpo_runs_the_loop_and_a_rerun_trains_nothing(small_tiny_model_dir, tmp_path):
    """The whole loop, one iteration, on a shrunk embedded model (its answers are in the task's form, so the debate
    gives pairs; its agents rarely agree, so a third of them labels a problem): every model's pairs and DPO record,
    and the same command again recomputes nothing."""
    import json

    from mafl.pipeline import run
    from mafl.tiny import read_recipe

    run_dir = tmp_path / "run"
    args = ["method=multiagent_dpo", "debug=smoke", "dataset.n_train=12", "dataset.n_eval=4", "debate.chunk_size=4",
            "metrics.diversity=false", "finetune.min_agreement=0.3", f"model.path={small_tiny_model_dir}", f"run_dir={run_dir}"]
    run(compose_cfg(args))
    sets_dir, models_dir = run_dir / "iter_1" / "sets", run_dir / "iter_1" / "models"
    report = json.loads((sets_dir / "report.json").read_text())
    results = json.loads((run_dir / "results.json").read_text())
    assert results["model_weights"] == read_recipe(small_tiny_model_dir)["weights_sha256"]  # the weights it started from
    names = ["generator_0", "generator_1", "generator_2", "critic_0", "critic_1", "critic_2"]
    total = 0
    for m in names:
        saved = PairSet.load(sets_dir / f"{m}.pairs.jsonl")
        record = json.loads((models_dir / f"{m}.json").read_text())
        assert record["objective"] == "dpo" and record["num_pairs"] == len(saved) == report[m]["pairs"]["pairs"]
        assert record["trained"] == bool(len(saved)) and (models_dir / m / "adapter_model.safetensors").exists()
        assert results["finetune"]["1"]["sets"][m]["pairs"]["pairs"] == len(saved)
        total += len(saved)
    assert total > 0
    stamp = {p: p.stat().st_mtime_ns for p in (run_dir / "iter_1").rglob("*") if p.is_file()}
    run(compose_cfg(args))
    assert all(p.stat().st_mtime_ns == t for p, t in stamp.items())
