"""The GRPO rewards on hand-made completions (arithmetic answers: agreement, equivalent spellings, cut off,
unreadable, the critic's D- bonus, the gold reward), and the GRPO prompts cut from hand-made debate transcripts (a
critic's are its debate contexts; no majority, no prompts; the gold reward's targets)."""
from __future__ import annotations

import pytest

from mafl.errors import ConfigError
from mafl.finetune.rewards import REWARDS, check_reward, get_reward, score
from mafl.finetune.rl_prompts import PromptSet, build_prompts, build_society_prompts, merge_prompts, prompts_path
from mafl.tasks import get_task
from test_finetune_sets import TASK, transcript

ARITHMETIC = get_task("arithmetic")
GENERATOR = {"target": "4", "earlier_agreed": None}
CRITIC_WAS_WRONG = {"target": "4", "earlier_agreed": False}
CRITIC_WAS_RIGHT = {"target": "4", "earlier_agreed": True}


@pytest.mark.parametrize("text, finished, expected", [
    ("2+2=4. The answer is 4.", True, 1.0),
    ("2+2=4. The answer is 4.0.", True, 1.0),  # 4.0 and 4 are one answer
    ("The answer is 5.", True, 0.0),
    ("2+2=4. The answer is 4.", False, 0.0),  # cut off by the token budget: no answer
    ("I cannot say.", True, 0.0),  # unreadable
    ("", True, 0.0),
])
def test_majority_rewards_agreement_with_the_label(text, finished, expected):
    assert score(get_reward("majority"), ARITHMETIC, text, finished, GENERATOR) == expected


def test_gold_scores_the_same_way_but_is_marked_as_reading_the_gold_answer():
    gold = get_reward("gold")
    assert score(gold, ARITHMETIC, "The answer is 4.00", True, {"target": "4"}) == 1.0
    assert score(gold, ARITHMETIC, "The answer is -4", True, {"target": "4"}) == 0.0
    assert gold.reads_gold and gold.shown == "gold (reads the gold answer)"
    assert [n for n in REWARDS if get_reward(n).reads_gold] == ["gold"]


@pytest.mark.parametrize("row, text, finished, expected", [
    (CRITIC_WAS_WRONG, "The answer is 4.", True, 1.5),  # wrong -> the label: the D- move earns the bonus
    (CRITIC_WAS_RIGHT, "The answer is 4.", True, 1.0),  # it already agreed: majority only
    (CRITIC_WAS_WRONG, "The answer is 7.", True, 0.0),  # no move to the label, no bonus
    (CRITIC_WAS_WRONG, "The answer is 4.", False, 0.0),  # cut off
    (GENERATOR, "The answer is 4.", True, 1.0),  # a generator has no earlier answer
])
def test_correction_adds_the_bonus_for_a_critics_wrong_to_right_move(row, text, finished, expected):
    assert score(get_reward("correction"), ARITHMETIC, text, finished, row, {"bonus": 0.5}) == expected


def test_correction_trains_with_a_scale_its_bonus_survives():
    """Group scaling (trl's default) would cancel a bonus that is constant within a group: correction defaults to
    batch scaling, keeps none, refuses group; the other rewards leave finetune.grpo as given."""
    correction = get_reward("correction")
    assert correction.grpo_settings({"beta": 0.0}) == {"beta": 0.0, "scale_rewards": "batch"}
    assert correction.grpo_settings({"scale_rewards": "none"}) == {"scale_rewards": "none"}
    for group in ("group", True):
        with pytest.raises(ConfigError, match=r"^finetune.grpo.scale_rewards: .* cancels reward correction's bonus "
                                              r"\(a constant within a group\); use batch or none$"):
            correction.grpo_settings({"scale_rewards": group})
    for name in ("majority", "gold"):
        assert get_reward(name).grpo_settings({"scale_rewards": "group"}) == {"scale_rewards": "group"}
        assert get_reward(name).grpo_settings(None) == {}


def test_reward_settings_are_checked():
    assert check_reward("correction", {}) == ("correction", {"bonus": 1.0})
    assert check_reward("correction", {"bonus": 0.25}) == ("correction", {"bonus": 0.25})
    with pytest.raises(ConfigError, match=r"^finetune.reward: 'vote' is not one of majority, gold, correction$"):
        check_reward("vote", {})
    with pytest.raises(ConfigError, match=r"^finetune.reward_kwargs.bonus: unknown key; not an argument of reward "
                                          r"majority$"):
        check_reward("majority", {"bonus": 1.0})
    with pytest.raises(ConfigError, match=r"^finetune.reward_kwargs.bonus: must be a number"):
        check_reward("correction", {"bonus": "big"})


def test_a_critics_prompts_are_the_contexts_it_answered_in():
    a = transcript("a", [["1", "2", "1"], ["1", "1", "1"]], "1")  # agent 1: wrong in round 1, right in round 2
    b = transcript("b", [["5", "6", "7"], ["5", "6", "7"]], None)  # no majority: no prompts
    c = transcript("c", [["2", "2", "2"], ["2", "2", "1"]], "2", gold="1")  # a wrong majority: still the label
    prompts = build_society_prompts([a, b, c], TASK, 3, "correction")
    assert [p.prompt for p in prompts["critic_1"].prompts] == [a.rounds[1][1].messages, c.rounds[1][1].messages]
    assert [p.prompt for p in prompts["generator_2"].prompts] == [a.rounds[0][2].messages, c.rounds[0][2].messages]
    assert [(p.target, p.earlier_agreed) for p in prompts["critic_1"].prompts] == [("1", False), ("2", True)]
    assert all(p.earlier_agreed is None for p in prompts["generator_0"].prompts)
    rep = prompts["critic_1"].report()
    assert rep == {"name": "critic_1", "prompts": 2, "reward": "correction", "reads_gold": False,
                   "target_accuracy": 0.5, "earlier_disagreed": 1, "duplicates_removed": 0, "dropped_by_cap": 0,
                   "skipped_no_majority": 1}
    # what the trainer reads of a prompt: nothing about the gold answer
    assert set(prompts["critic_1"].records()[0]) == {"prompt", "target", "earlier_agreed"}


def test_the_gold_reward_takes_every_problem_with_its_gold_answer():
    a = transcript("a", [["1", "2", "1"], ["1", "1", "1"]], "1", gold="2")
    b = transcript("b", [["5", "6", "7"], ["5", "6", "7"]], None, gold="6")
    prompts = build_society_prompts([a, b], TASK, 3, "gold")
    assert [p.target for p in prompts["critic_0"].prompts] == ["2", "6"]
    assert prompts["critic_0"].report()["reads_gold"] and prompts["critic_0"].skipped_no_majority == 0


def test_one_round_without_critics_dedupe_cap_merge_and_save(tmp_path):
    ts = [transcript(str(i), [["1", "1", "2"]], "1") for i in range(5)]
    assert len(build_prompts(ts, 0, TASK, "last", "majority")) == 0  # one round: no critic prompts
    every = build_prompts(ts + ts[:2], 0, TASK, "all", "majority")
    assert len(every) == 5 and every.duplicates_removed == 2
    capped = build_prompts(ts, 0, TASK, "first", "majority", max_prompts=3, seed=1)
    assert len(capped) == 3 and capped.dropped_by_cap == 2
    assert capped.prompts == build_prompts(ts, 0, TASK, "first", "majority", max_prompts=3, seed=1).prompts
    # a shared model: every agent's prompts (each agent's are its own here), and a repeated prompt once
    parts = list(build_society_prompts(ts, TASK, 3, "majority", critics=False).values())
    merged = merge_prompts(parts + parts[:1], name="model")
    assert len(merged) == 15 and merged.duplicates_removed == 5
    path = merged.save(prompts_path(tmp_path, "model"))
    again = PromptSet.load(path)
    assert again.prompts == merged.prompts and again.name == "model" and again.reward == "majority"
