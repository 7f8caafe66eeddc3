"""``mafl diagnose`` (mafl/diagnose): agreement patterns, answer moves, every rate of the table on hand-made
transcripts with known answers, summary exactness on literal strings, the reference responses, the span
probes, and one end-to-end diagnosis of a small pretrained tiny model (its printed table against its JSON)."""
from __future__ import annotations

import json
import math
import re

import pytest

from mafl.backends.base import Score
from mafl.tasks.prompts import Prompts
from mafl.debate.society import readers
from mafl.debate.transcript import Transcript, Turn
from mafl.diagnose.command import main, run_weights, saved_run_config, split_args
from mafl.diagnose.patterns import agreement_pattern, behaviour, pattern_order
from mafl.diagnose.probe import TurnRow, add_probes, pattern_table, probe_requests, turn_rows
from mafl.diagnose.references import reference_response
from mafl.diagnose.spans import span_logprob
from mafl.diagnose.summaries import check_summary, exact_summary, statements
from mafl.diagnose.table import COLUMNS
from mafl.errors import ConfigError
from mafl.tasks import get_task
from mafl.tasks.base import Problem, Reference
from mafl.tasks.vote import majority_vote

TASK = get_task("arithmetic")
FULL = readers(3, "full")


# -- agreement patterns and moves --------------------------------------------------------------------------------
@pytest.mark.parametrize("answers, pattern", [
    (["4", "4.0", "4"], "3-0"),  # equivalent spellings are one answer
    (["4", "5", "4"], "2-1"),
    (["1", "2", "3"], "1-1-1"),
    (["4", None, "4"], "2-?"),
    (["4", "5", None], "1-1-?"),
    ([None, None, None], "?-?-?"),
    (["1", "2", "2", "1"], "2-2"),  # a tie of two clusters
    (["1", "1", "1", "1", "2"], "4-1"),
    (["7"], "1-0"),
])
def test_the_agreement_pattern_is_the_partition_of_the_answers(answers, pattern):
    assert agreement_pattern(TASK, answers) == pattern


def test_patterns_are_listed_most_agreement_first():
    patterns = ["1-1-1", "2-?", "?-?-?", "3-0", "1-1-?", "2-1"]
    assert sorted(patterns, key=pattern_order) == ["3-0", "2-1", "2-?", "1-1-1", "1-1-?", "?-?-?"]


@pytest.mark.parametrize("final, own, read, move", [
    ("4", "4.0", ["5", "6"], "kept"),
    ("4", "4", ["4", "6"], "kept"),  # its own answer, also another's: kept
    ("5", "4", ["5.0", "6"], "adopted"),
    ("7", "4", ["5", "6"], "new"),
    ("5", None, ["5", None], "adopted"),
    ("5", None, [None, None], "new"),
    (None, "4", ["4", "4"], "unreadable"),
])
def test_the_move_of_a_last_round_answer(final, own, read, move):
    assert behaviour(TASK, final, own, read) == move


# -- summaries ---------------------------------------------------------------------------------------------------
READ = [(1, "4.0"), (2, "-3")]  # agent 0 reads agents 1 and 2: labels 2 and 3


@pytest.mark.parametrize("summary, exact, missing, wrong, invented", [
    ("Agent 2 says 4. Agent 3 says -3.", True, [], [], []),
    ("agent 3 says -3.0, and Agent 2 says 4", True, [], [], []),  # any order, equivalent spelling
    ("Agent 2 and Agent 3 say 4.", False, [], [3], []),  # a shared statement
    ("Agent 2 says 4.", False, [3], [], []),  # a missing agent
    ("Agent 2 says 4. Agent 3 says -3. Agent 1 says 9.", False, [], [], [1]),  # an invented agent
    ("Agent 2 says 5. Agent 3 says -3.", False, [], [2], []),  # a wrong number
    ("Agent 2 says it. Agent 3 says -3.", False, [], [2], []),  # an agent with no number, and none after it
    ("The agents disagree.", False, [2, 3], [], []),
])
def test_summary_exactness(summary, exact, missing, wrong, invented):
    check = check_summary(TASK, summary, READ)
    assert (check.exact, check.missing, check.wrong, check.invented) == (exact, missing, wrong, invented)


def test_a_shared_statement_gives_both_agents_its_answer():
    assert statements(TASK, "Agent 2 and Agent 3 both say 12. Agent 2 says 5.") == {2: "12", 3: "12"}


def test_an_unreadable_answer_is_neither_required_nor_judged_and_a_cut_summary_is_not_exact():
    read = [(1, "4"), (2, None)]
    assert check_summary(TASK, "Agent 2 says 4.", read).exact
    assert check_summary(TASK, "Agent 2 says 4. Agent 3 says 8.", read).exact
    assert not check_summary(TASK, "Agent 2 says 4.", read, finished=False).exact


def test_the_exact_summary_and_the_spans_of_its_numbers():
    text, spans = exact_summary([(0, "12"), (1, None), (2, "-3")])
    assert text == "Agent 1 says 12. Agent 3 says -3."
    assert [text[s:e] for s, e in spans] == ["12", "-3"]
    assert check_summary(TASK, text, [(0, "12"), (1, None), (2, "-3")]).exact


# -- reference responses -----------------------------------------------------------------------------------------
def test_the_arithmetic_reference_is_the_embedded_models_worked_answer():
    from mafl.tasks.arithmetic import arithmetic_problems

    _, problems = arithmetic_problems(1, 20)
    for p in problems:
        ref = reference_response(TASK, p)
        assert ref.text.endswith(f"The answer is {p.answer}.")
        assert ref.text[slice(*ref.answer)] == p.answer and ref.answer[1] == len(ref.text) - 1
        assert ref.text[slice(*ref.result)] == p.answer
        assert ref.text[ref.result[0] - 1] == "=" and ref.text[ref.result[1]] == "."  # the last step's result


def test_the_generic_and_the_gsm8k_references():
    generic = get_task("math").reference_response(Problem("m", "q", "\\frac{1}{2}"))
    assert generic == Reference("The answer is \\frac{1}{2}.", answer=(14, 25), result=None)
    solution = "She sold 48/2 = <<48/2=24>>24 clips.\nIn all 48+24 = <<48+24=72>>72 clips.\n#### 72"
    ref = get_task("gsm8k").reference_response(Problem("g", "q", "72", {"solution": solution}))
    assert ref.text == "She sold 48/2 = 24 clips.\nIn all 48+24 = 72 clips.\nThe answer is 72."
    assert ref.text[slice(*ref.answer)] == "72" and ref.answer[1] == len(ref.text) - 1
    assert ref.text[ref.result[0] - 3:ref.result[1] + 1] == " = 72 "


def test_a_number_is_found_whole_and_a_missing_answer_is_refused():
    ref = Reference.locate("17+7.5=24.5, so 7.", "7")
    assert ref.answer == (16, 17) and ref.result is None
    with pytest.raises(ValueError, match="does not state the gold answer '8'"):
        Reference.locate("The answer is 18.", "8")


# -- hand-made debates and every rate ----------------------------------------------------------------------------
def turn(agent: int, round: int, answer: str | None, gold: str, summary: str | None = None) -> Turn:
    text = f"The answer is {answer}." if answer is not None else "I do not know"
    return Turn(agent=agent, round=round, model=f"{'critic' if round else 'generator'}_{agent}",
                messages=[{"role": "user", "content": f"question, round {round}"}], response=text, answer=answer,
                correct=TASK.is_equivalent(answer, gold), summary=summary, summary_finished=summary and True)


def transcript(pid: str, gold: str, first, final, summaries=None) -> Transcript:
    summaries = summaries or [None] * len(first)
    rounds = [[turn(n, 0, a, gold) for n, a in enumerate(first)],
              [turn(n, 1, a, gold, s) for n, (a, s) in enumerate(zip(final, summaries))]]
    vote = majority_vote(TASK, final, tie_seed=0)
    return Transcript(problem=Problem(pid, f"question {pid}", gold), rounds=rounds, final_answer=vote.winner,
                      correct=TASK.is_equivalent(vote.winner, gold))


def fresh_of(t: Transcript, answers) -> Transcript:
    return Transcript(problem=t.problem, rounds=[[turn(n, 0, a, t.problem.answer) for n, a in enumerate(answers)]],
                      final_answer=None)


@pytest.fixture
def debate():
    a = transcript("A", "4", ["4", "4.0", "4"], ["4", "5", None],
                   ["Agent 2 says 4. Agent 3 says 4.", "Agent 1 says 4.", "Agent 1 says 4. Agent 2 says 4. Agent 4 says 9."])
    b = transcript("B", "7", ["7", "8", "8"], ["8", "8", "7"])
    c = transcript("C", "1", ["1", "2", None], ["2", "2", "2"])
    d = transcript("D", "3", ["3", "3", "3"], ["3", "3", "3"])
    fresh = [fresh_of(a, ["4", "4", "3"]), fresh_of(b, ["7", "7", "8"]), fresh_of(c, ["1", "1", "1"]),
             fresh_of(d, ["3", "1", "3"])]
    return [a, b, c, d], fresh


def rate(stats, *path):
    value = stats
    for key in path:
        value = value[key]
    return (None if value["mean"] is None else round(value["mean"], 4)), value["n"]


def test_every_rate_of_the_table_on_a_hand_made_debate(debate):
    transcripts, fresh = debate
    rows = turn_rows(TASK, transcripts, fresh, FULL, None)
    assert [r.behaviour for r in rows] == ["kept", "new", "unreadable", "adopted", "kept", "adopted",
                                           "adopted", "kept", "adopted", "kept", "kept", "kept"]
    table = pattern_table(rows)
    assert list(table) == ["3-0", "2-1", "1-1-?", "all"]
    unanimous, split, broken, everything = (table[k] for k in table)
    assert (unanimous["problems"], unanimous["turns"]) == (2, 6)
    assert rate(unanimous, "accuracy", "round1") == (1.0, 6)
    assert rate(unanimous, "accuracy", "final") == (round(4 / 6, 4), 6)
    assert rate(unanimous, "accuracy", "fresh") == (round(4 / 6, 4), 6)
    assert [rate(unanimous, "behaviour", b)[0] for b in ("kept", "adopted", "new", "unreadable")] == \
        [round(4 / 6, 4), 0.0, round(1 / 6, 4), round(1 / 6, 4)]
    assert rate(unanimous, "wrong_to_right") == (None, 0)
    assert rate(unanimous, "right_to_wrong") == (round(2 / 6, 4), 6)
    assert rate(unanimous, "summary_exact") == (round(1 / 3, 4), 3)  # D read no summaries
    assert rate(split, "accuracy", "round1") == (round(1 / 3, 4), 3)
    assert rate(split, "accuracy", "fresh") == (round(2 / 3, 4), 3)
    assert rate(split, "wrong_to_right") == (0.5, 2) and rate(split, "right_to_wrong") == (1.0, 1)
    assert rate(split, "behaviour", "adopted") == (round(2 / 3, 4), 3)
    assert rate(split, "summary_exact") == (None, 0)
    assert rate(broken, "accuracy", "final") == (0.0, 3)
    assert rate(broken, "wrong_to_right") == (0.0, 2) and rate(broken, "right_to_wrong") == (1.0, 1)
    assert (everything["problems"], everything["turns"]) == (4, 12)
    assert rate(everything, "accuracy", "final") == (round(5 / 12, 4), 12)
    assert rate(everything, "accuracy", "fresh") == (round(9 / 12, 4), 12)
    # the round-1 votes: A 4, B 8, C a tie of 1 and 2 (seeded), D 3; the final answers as the engine graded them
    assert rate(unanimous, "accuracy", "vote_round1") == (1.0, 6) and rate(split, "accuracy", "vote_round1")[0] == 0
    assert rate(broken, "accuracy", "vote_round1")[0] in (0.0, 1.0)
    assert rate(unanimous, "accuracy", "vote_final") == ((transcripts[0].correct + 1) / 2, 6)  # A's vote is a tie
    assert rate(split, "accuracy", "vote_final")[0] == 0


def test_fresh_samples_of_other_problems_are_refused(debate):
    transcripts, fresh = debate
    with pytest.raises(ValueError, match="not of the debated problems"):
        turn_rows(TASK, transcripts, fresh[::-1], FULL, None)


# -- probes ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def fake_score(tokenizer, text: str) -> Score:
    """Token k of ``text`` gets log-probability -(k+1)/10 (the eos last)."""
    n = len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1
    each = tuple(-(k + 1) / 10 for k in range(n))
    return Score(logprob=sum(each), num_tokens=n, token_logprobs=each)


def test_a_span_scores_exactly_the_tokens_that_cover_it(tokenizer):
    text = "The answer is 42."
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    k = ids.index(tokenizer.convert_tokens_to_ids("42"))  # a number token of the embedded tokenizer
    score = fake_score(tokenizer, text)
    assert span_logprob(tokenizer, text, score.token_logprobs, (14, 16)) == pytest.approx(-(k + 1) / 10)
    assert span_logprob(tokenizer, text, score.token_logprobs, (0, len(text))) == pytest.approx(
        sum(score.token_logprobs[:-1]))
    assert math.isnan(span_logprob(tokenizer, text, score.token_logprobs[:-1], (14, 16)))  # misaligned scores


def test_the_probes_of_a_debate(debate, tokenizer):
    transcripts, fresh = debate
    prompts = Prompts(system_generator="", system_critic="", round1="{question}", debate="{question}{others}",
                      debate_others="{question}{others}", other="Agent {agent}: {response}",
                      summarize="Summarize:\n{others}", summary="{summary}")
    requests, keys = probe_requests(TASK, transcripts, prompts, FULL, None, lambda model: model,
                                    lambda agent, round: None)
    # two references per turn, and a summary request for each of A's turns (the others read no summary)
    assert len(requests) == 2 * 12 + 3
    a0 = requests[:3]
    assert a0[0].messages == transcripts[0].rounds[1][0].messages and a0[0].adapter == "critic_0"
    assert a0[1].messages == transcripts[0].rounds[0][0].messages and a0[1].adapter == "generator_0"
    assert a0[0].response == "The answer is 4." == a0[1].response  # no operands: the task's generic reference
    assert a0[2].adapter is None and a0[2].response == "Agent 2 says 4.0. Agent 3 says 4."
    assert a0[2].messages == prompts.summarize_request([(1, "The answer is 4.0."), (2, "The answer is 4.")])
    rows = turn_rows(TASK, transcripts, fresh, FULL, None)
    add_probes(rows, keys, [fake_score(tokenizer, r.response) for r in requests], tokenizer)
    k = tokenizer("The answer is 4.", add_special_tokens=False)["input_ids"].index(
        tokenizer.convert_tokens_to_ids("4"))
    assert rows[0].p_answer_final == pytest.approx(math.exp(-(k + 1) / 10))
    assert rows[0].p_result_final is None  # the generic reference has no reasoning
    assert len(rows[0].copy_probs) == 2 and rows[3].copy_probs == []
    table = pattern_table(rows)
    assert table["all"]["probes"]["p_answer_round1"]["n"] == 12 and table["all"]["copy_prob"]["n"] == 6
    first, second = table["3-0"]["copy_prob_by_position"]
    assert first["n"] == second["n"] == 3
    assert first["mean"] == pytest.approx(sum(r.copy_probs[0] for r in rows[:3]) / 3)
    assert table["2-1"]["copy_prob_by_position"] == []


# -- the command -------------------------------------------------------------------------------------------------
def test_command_line_keys():
    assert split_args(["diagnose.n=5", "seed=1", "diagnose.out=x"]) == ({"n": 5, "out": "x"}, ["seed=1"])
    with pytest.raises(ConfigError, match=r"^diagnose.problems: not a diagnose key"):
        split_args(["diagnose.problems=5"])
    with pytest.raises(ConfigError, match=r"^diagnose.n: must be an integer >= 1"):
        split_args(["diagnose.n=0"])
    with pytest.raises(ConfigError, match=r"^diagnose.iteration: needs diagnose.run"):
        split_args(["diagnose.iteration=1"])


def test_a_runs_config_and_weights(tmp_path):
    from omegaconf import OmegaConf

    OmegaConf.save(OmegaConf.create({"seed": 0, "dataset": {"split": "eval"}}), tmp_path / "config.yaml")
    assert saved_run_config(tmp_path, ["dataset.split=dev", "seed=3"]) == {"seed": 3, "dataset": {"split": "dev"}}
    with pytest.raises(ConfigError, match=r"^dataset=gsm8k: with diagnose.run"):
        saved_run_config(tmp_path, ["dataset=gsm8k"])
    models = ["generator_0", "critic_0"]
    assert run_weights(tmp_path, None, models) == (0, {})
    for k in (1, 2):
        for m in models:
            (tmp_path / f"iter_{k}" / "models" / m).mkdir(parents=True)
    (tmp_path / "iter_3" / "models").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"^diagnose.iteration: .*iter_3/models holds no weights for generator_0"):
        run_weights(tmp_path, None, models)
    k, weights = run_weights(tmp_path, 2, models)
    assert k == 2 and weights == {m: str((tmp_path / "iter_2" / "models" / m).resolve()) for m in models}


def parse_table(text: str, index: int = 0) -> tuple[list[str], list[list[str]]]:
    """The header and the rows of the ``index``-th markdown table of ``text``."""
    tables = re.findall(r"(?:^\|.*\n?)+", text, re.M)
    cells = [[c.strip() for c in l.strip("|").split("|")] for l in tables[index].splitlines()]
    return cells[0], cells[2:]


def test_mafl_diagnose_end_to_end(small_tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "diag"
    args = [f"model.path={small_tiny_model_dir}", "dataset.split=dev", "diagnose.n=4", f"diagnose.out={out}",
            "debate.max_new_tokens=60"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "diagnosis.json").read_text())
    header, body = parse_table(printed)
    assert header == [name for name, _ in COLUMNS]
    table = result["table"]
    assert [row[0] for row in body] == list(table) and list(table)[-1] == "all"
    assert result["problems"] == 4 and table["all"]["problems"] == 4 and table["all"]["turns"] == 12
    assert sum(table[p]["turns"] for p in table if p != "all") == 12
    for row in body:
        stats = table[row[0]]
        assert [int(row[1]), int(row[2])] == [stats["problems"], stats["turns"]]
        for (name, path), value in zip(COLUMNS[3:], row[3:]):
            cell = stats
            for key in path:
                cell = cell[key]
            if cell["mean"] is None:
                assert value == "–"
            else:
                assert float(value.split()[0]) == pytest.approx(cell["mean"], abs=0.005), name
    # every round-1 answer of the society is readable and the probes were measured
    assert result["unavailable"] is None and table["all"]["probes"]["p_answer_final"]["n"] == 12
    assert table["all"]["probes"]["p_result_round1"]["n"] == 12 and table["all"]["summary_exact"]["n"] == 12
    header, positions = parse_table(printed, 1)  # the copy probability of the 1st and the 2nd number
    assert header == ["pattern", "p(copy) 1st", "p(copy) 2nd"] and [r[0] for r in positions] == list(table)
    for row in positions:
        want = [f"{v['mean']:.2f} ({v['n']})" for v in table[row[0]]["copy_prob_by_position"]]
        assert row[1:] == want + ["–"] * (len(row) - 1 - len(want))  # a pattern with fewer numbers: dashes
    header, body = parse_table(printed)
    rows = [TurnRow(**json.loads(l)) for l in (out / "turns.jsonl").read_text().splitlines()]
    assert json.loads(json.dumps(pattern_table(rows))) == table
    assert re.search(r"^`mafl diagnose .*diagnose.n=4", (out / "diagnosis.md").read_text())
    # the same command continues (the debates are read back); another configuration is refused
    debated = (out / "debate" / "transcripts.jsonl").stat().st_mtime_ns
    assert main(args) == 0 and parse_table(capsys.readouterr().out) == (header, body)
    assert (out / "debate" / "transcripts.jsonl").stat().st_mtime_ns == debated
    assert main([*args[:2], "diagnose.n=5", *args[3:]]) == 2
    assert "bad config: diagnose.n: differs from the run already in" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["dataset=nope"], r"bad config: In 'config': Could not find 'dataset/nope' Available options in 'dataset': .*"),
    (["method=majority"], r"bad config: debate.rounds: the diagnosis needs a later round to diagnose \(got 1 with "
                          r"method=majority\)"),
])
def test_a_bad_command_line_is_one_clear_line(args, message, tiny_model_dir, tmp_path, capsys):
    assert main([*args, f"model.path={tiny_model_dir}", f"diagnose.out={tmp_path / 'd'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert re.fullmatch("mafl diagnose: " + message, err) and "\n" not in err and "search path" not in err
    assert not (tmp_path / "d").exists()  # refused before any work


def test_a_runs_fine_tuned_society_is_diagnosed_with_its_weights(tiny_model_dir, tmp_path, capsys):
    from omegaconf import OmegaConf

    from helpers import compose_cfg
    from serving import make_adapters

    run = tmp_path / "run"
    run.mkdir()
    OmegaConf.save(compose_cfg([f"model.path={tiny_model_dir}", f"run_dir={run}"]), run / "config.yaml")
    make_adapters(str(tiny_model_dir), [f"{kind}_{n}" for kind in ("generator", "critic") for n in range(3)],
                  run / "iter_1" / "models")
    common = [f"diagnose.run={run}", "diagnose.n=2", "debate.max_new_tokens=12", "debate.summary_max_new_tokens=8"]
    responses = {}
    for k in (0, 1):
        out = tmp_path / f"iter{k}"
        assert main([*common, f"diagnose.iteration={k}", f"diagnose.out={out}"]) == 0, capsys.readouterr().err
        saved = OmegaConf.load(out / "config.yaml")
        assert saved.diagnose.iteration == k and saved.debate.max_new_tokens == 12
        debate = [json.loads(l) for l in (out / "debate" / "transcripts.jsonl").read_text().splitlines()]
        responses[k] = [u["response"] for t in debate for rnd in t["rounds"] for u in rnd]
    assert responses[0] != responses[1]  # the fine-tuned weights speak
    assert main([*common, "diagnose.iteration=2", f"diagnose.out={tmp_path / 'iter2'}"]) == 2
    assert "diagnose.iteration: " in capsys.readouterr().err
