"""The baselines the critics of debate ask for (issue 24): isolated self-refinement (``method=self_refine``) and the
majority vote matched with the debate on generated tokens (``method.match=tokens``). Scripted backends, real
prompts and the real loop."""
from __future__ import annotations

import json
import re

import pytest

from helpers import ScriptedBackend, compose_cfg
from mafl.backends.base import Completion
from mafl.pipeline import validate
from mafl.debate.engine import run_debate
from mafl.debate.settings import DebateSettings
from mafl.tasks.prompts import Prompts
from mafl.debate.society import Society
from mafl.errors import ConfigError
from mafl.methods.majority import token_matched_chunk
from mafl.metrics.cutoff import generated_tokens
from mafl.tasks import get_task
from mafl.tasks.base import Problem
from test_debate_context import DATASETS, problems

def contents(messages) -> str:
    return "\n".join(m["content"] for m in messages)


@pytest.mark.parametrize("dataset", DATASETS)
def test_self_refine_prompts_hold_no_other_agents_text(dataset, tmp_path):
    cfg = compose_cfg([f"dataset={dataset}", "method=self_refine", "debate.rounds=3"])
    s, prompts, task = (DebateSettings.from_cfg(cfg.debate),
                        Prompts.from_cfg(cfg.dataset.prompts, review=cfg.dataset.review_prompt),
                        get_task(cfg.dataset.task))
    assert (s.context, s.summarize, s.critics) == ("self", False, False)
    backend = ScriptedBackend(
        lambda r: f"Agent text {r.sampling.seed} {len(r.messages)}. The answer is \\boxed{{4}}. 4")
    (t,) = run_debate(backend, task, problems(1), Society(agents=3, critics=False), s, prompts, seed=1,
                      out_dir=tmp_path, progress=False)
    assert len(t.rounds) == 3
    for r in (1, 2):
        for n, turn in enumerate(t.rounds[r]):
            text = contents(turn.messages)
            others = [t.rounds[q][j].response for q in range(r) for j in range(3) if j != n]
            assert others and not any(o in text for o in others)  # nobody else's answer, in any round
            own = [m["content"] for m in turn.messages if m["role"] == "assistant"]
            assert own == [t.rounds[q][n].response for q in range(r)]  # its own conversation, every turn of it
            assert turn.messages[-1]["content"] == prompts.review.format(question=t.problem.question)
            assert turn.messages[0] == {"role": "system", "content": prompts.system_generator}
            assert turn.summary is None and turn.model == f"generator_{n}"
    # every request sent in a later round: no other agent's round-1 text
    later = [req for call in backend.calls[1:] for req in call]
    assert len(later) == 6
    round1 = [u.response for u in t.rounds[0]]
    for req in later:
        own = req.messages[-2]["content"] if req.messages[-2]["role"] == "assistant" else None
        assert own is not None and len([x for x in round1 if x in contents(req.messages)]) == 1  # its own only


def test_self_refine_refuses_a_debate_context_and_summaries():
    with pytest.raises(ConfigError, match=r"^debate.context: method self_refine"):
        validate(compose_cfg(["method=self_refine", "debate.context=conversation", "logger=none"]))
    with pytest.raises(ConfigError, match=r"^debate.summarize:"):
        validate(compose_cfg(["method=self_refine", "debate.summarize=true", "logger=none"]))
    with pytest.raises(ConfigError, match=r"^dataset.review_prompt: method self_refine"):
        validate(compose_cfg(["method=self_refine", "dataset.review_prompt=null", "logger=none"]))
    with pytest.raises(ConfigError, match=r"^dataset.review_prompt: unknown field\(s\) \['others'\]"):
        validate(compose_cfg(["method=self_refine", "dataset.review_prompt='{others} again'", "logger=none"]))
    validate(compose_cfg(["method=debate", "dataset.review_prompt=null", "logger=none"]))  # only self_refine needs it


def sized(tokens_of):
    """A backend whose k-th answer to a problem (k from the sampling seed's order) costs ``tokens_of(i, k)``
    tokens, problem i read from the question."""
    seen: dict[tuple[int, int], int] = {}

    def answer(request):
        i = int(re.search(r"What is (\d+) plus", request.messages[-1]["content"]).group(1))
        k = seen.setdefault((i, request.sampling.seed), len([1 for (j, _) in seen if j == i]))
        return Completion(text=f"Work. The answer is \\boxed{{{k % 3}}}.", num_tokens=tokens_of(i, k))

    return answer


def test_token_matching_stops_within_one_sample_of_the_target():
    cfg = compose_cfg(["method=majority_tokens"])
    s, prompts, task = (DebateSettings.from_cfg(cfg.debate), Prompts.from_cfg(cfg.dataset.prompts),
                        get_task(cfg.dataset.task))
    costs = lambda i, k: 7 + 5 * i + (k * 13) % 11  # noqa: E731  answers of different lengths
    target = 100.0
    backend = ScriptedBackend(sized(costs))
    out = token_matched_chunk(backend, task, problems(6), Society(agents=1), s, prompts, seed=3, target=target,
                              max_samples=64)
    for t in out:
        spent = [u.num_tokens for u in t.rounds[0]]
        assert sum(spent) >= target > sum(spent[:-1])  # the last answer crossed the target, none before it
        assert [u.agent for u in t.rounds[0]] == list(range(len(spent)))
        assert t.final_answer is not None and len(t.rounds) == 1
    assert len({len(t.rounds[0]) for t in out}) > 1  # problems of long answers took fewer of them
    # one backend call per wave, each holding only the problems still short of the target
    waves = range(len(backend.calls))
    assert [len(c) for c in backend.calls] == [sum(len(t.rounds[0]) > k for t in out) for k in waves]
    # the cap bounds any problem's answers
    capped = token_matched_chunk(ScriptedBackend(sized(lambda i, k: 1)), task, problems(2), Society(agents=1), s,
                                 prompts, seed=3, target=target, max_samples=5)
    assert [len(t.rounds[0]) for t in capped] == [5, 5]


def test_the_kth_answer_has_the_seed_of_the_answer_matched_majoritys_agent_k():
    cfg = compose_cfg(["method=majority_tokens"])
    s, prompts, task = (DebateSettings.from_cfg(cfg.debate), Prompts.from_cfg(cfg.dataset.prompts),
                        get_task(cfg.dataset.task))
    seeds = lambda r: Completion(text=f"s{r.sampling.seed}. The answer is 4.", num_tokens=10)  # noqa: E731
    tok = token_matched_chunk(ScriptedBackend(seeds), task, problems(2), Society(agents=1), s, prompts, seed=5,
                              target=60, max_samples=64)
    from dataclasses import replace

    from mafl.debate.engine import debate_chunk

    ans = debate_chunk(ScriptedBackend(seeds), task, problems(2), Society(agents=6), replace(s, agents=6, rounds=1),
                       prompts, seed=5)
    assert [[u.response for u in t.rounds[0]] for t in tok] == [[u.response for u in t.rounds[0]] for t in ans]


def test_majority_by_tokens_measures_the_debate_first_or_reads_a_debate_run(tmp_path, monkeypatch):
    import mafl.backends
    from mafl.pipeline import run

    backend = ScriptedBackend(lambda r: Completion(text=f"w{r.sampling.seed % 97} The answer is 4.",
                                                   num_tokens=3 + r.sampling.seed % 5))
    monkeypatch.setattr(mafl.backends, "backend_class", lambda name: (lambda *a, **k: backend))
    common = ["logger=none", f"model.path={tmp_path}", "metrics.diversity=false", "dataset.n_eval=5"]
    run(compose_cfg([*common, "method=debate", f"run_dir={tmp_path / 'debate'}"]))
    debate_tx = [json.loads(x) for x in (tmp_path / "debate" / "iter_0" / "eval" / "transcripts.jsonl").open()]
    from mafl.debate.transcript import Transcript

    want = sum(generated_tokens(Transcript.from_json(d)) for d in debate_tx) / len(debate_tx)
    assert any(u["summary_tokens"] > 0 for d in debate_tx for rnd in d["rounds"] for u in rnd)  # summaries count

    run(compose_cfg([*common, "method=majority_tokens", f"run_dir={tmp_path / 'measured'}"]))
    target = json.loads((tmp_path / "measured" / "iter_0" / "eval" / "token_target.json").read_text())
    assert target["target_tokens"] == pytest.approx(want)  # the same debate: same seeds, same problems
    run(compose_cfg([*common, "method=majority_tokens", f"method.reference={tmp_path / 'debate'}",
                     f"run_dir={tmp_path / 'read'}"]))
    read = json.loads((tmp_path / "read" / "iter_0" / "eval" / "token_target.json").read_text())
    assert read["target_tokens"] == pytest.approx(want)
    assert not (tmp_path / "read" / "iter_0" / "reference_debate").exists()  # read, not debated again
    for d in [json.loads(x) for x in (tmp_path / "read" / "iter_0" / "eval" / "transcripts.jsonl").open()]:
        spent = [u["num_tokens"] for u in d["rounds"][0]]
        assert sum(spent) >= want > sum(spent[:-1])

    with pytest.raises(ConfigError, match=r"^method.reference: .* debated other problems"):
        run(compose_cfg([*common[:-1], "dataset.n_eval=4", "method=majority_tokens",
                         f"method.reference={tmp_path / 'debate'}", f"run_dir={tmp_path / 'other'}"]))
    with pytest.raises(ConfigError, match=r"^method.reference: .* holds no"):
        validate(compose_cfg(["method=majority_tokens", f"method.reference={tmp_path}", "logger=none"]))
    with pytest.raises(ConfigError, match=r"^method.samples: method.match=tokens"):
        validate(compose_cfg(["method=majority_tokens", "method.samples=4", "logger=none"]))


def test_the_debate_or_vote_preset_runs_every_baseline_beside_the_debate():
    params = compose_cfg(["experiment=debate_or_vote"], return_hydra_config=True).hydra.sweeper.params
    methods = params.method.split(",")
    assert methods == ["single", "majority", "majority_tokens", "self_refine", "debate", "multiagent_ft"]
    got = {m: validate(compose_cfg(["experiment=debate_or_vote", f"method={m}", "logger=none"])) for m in methods}
    assert (got["self_refine"].debate.context, got["self_refine"].debate.rounds) == ("self", 2)
    assert got["majority_tokens"].method.reference_debate == got["debate"].debate  # the debate row's debate
    assert got["majority"].debate.agents == 6 and got["multiagent_ft"].finetune.iterations == 3
    assert all(got[m].finetune.iterations == 0 for m in methods[:-1])
