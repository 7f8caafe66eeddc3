"""Methods: each is a way to run the shared loop (mafl/methods/society_loop.py: debate -> sets -> fine-tunes ->
evaluation), chosen by ``method.name``; ``method.label`` names the method's row in reports.

Each method is one registered :class:`Method` that says what it is: whether it fine-tunes, whether one shared
model speaks for every agent, and the function that runs it (imported only when the method is chosen). Their
order here is the order of rows in reports (the paper's).

``single``, ``majority``, ``self_refine`` and ``debate`` evaluate the untuned society with 1 agent x 1 round,
``method.samples`` answers in one round (N x R by default: matched with the debate on answers; with
``method.match=tokens`` on generated tokens, mafl/methods/majority.py), N agents x R rounds each reviewing only its
own answer (isolated self-correction, ``debate.context=self``), and N agents x R rounds of debate (they never
fine-tune: ``finetune.iterations`` must be 0). ``multiagent_ft`` fine-tunes
each agent's generator and critic on its own slice of the debate (its ablations are presets of it:
conf/method/multiagent_ft_*.yaml); ``majority_ft`` fine-tunes one shared model on its own majority-voted samples;
``star`` fine-tunes one model on its rationales that reach the ground truth (mafl/methods/star.py).
``multiagent_dpo`` and ``majority_dpo`` are ``multiagent_ft`` and ``majority_ft`` trained by DPO on each model's
preference pairs (mafl/finetune/pairs.py) instead of SFT: ``finetune.objective`` (sft | dpo | sft+dpo) defaults to
the method's first ``objectives`` (beyond the paper). ``multiagent_grpo`` and ``majority_grpo`` train them by
reinforcement learning instead (``finetune.objective: grpo``, trl's GRPOTrainer: each model samples completions for
its own debate prompts and a reward scores them against the society's majority, mafl/finetune/rewards.py);
``multiagent_rlvr`` is the same with the gold answer as the reward (``finetune.reward: gold``), the one GRPO method
that reads ground truth, and the only one that may (docs/grpo.md).
``method.weights`` starts any society from saved fine-tuned weights (zero-shot transfer).

A mixed society (``society.models``: a base model per agent) runs with ``single`` (agent 0's base), ``debate`` and
``multiagent_ft``; the methods where one model answers for every agent (``majority``, ``majority_ft``, ``star``,
the single-model ablation) refuse it (``Method.mixed``).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from omegaconf import OmegaConf

from mafl.config import MethodSettings, Settings
from mafl.errors import ConfigError
from mafl.finetune.settings import FinetuneSettings
from mafl.methods.society import make_society, start_weights
from mafl.registry import Registry, load

LOOP = "mafl.methods.society_loop:run_society_loop"


@dataclass(frozen=True)
class Method:
    name: str
    runner: str  # "module:attr" of run(run_dir, settings) -> results
    finetunes: bool  # False: evaluates the untuned society only
    shared: bool  # one shared model speaks for every agent (else each agent has its own)
    check: str | None = None  # "module:attr" of check(settings), the method's own checks of the run's settings
    # "module:attr" of prepare(settings) -> settings: the settings the method runs with (validate() applies it)
    prepare: str | None = None
    mixed: bool = True  # takes a mixed society (society.models: a base per agent); False: one model samples all
    # the finetune.objective values it can train with; the first is its default (finetune.objective: null)
    objectives: tuple[str, ...] = ("sft",)

    def run(self, run_dir: Path, settings: Settings) -> dict:
        return load(self.runner)(run_dir, settings)

    def settle(self, settings: Settings) -> Settings:
        """The settings this method runs with (built by :func:`mafl.config.validate`, settled by the pipeline):
        fine-tuning asked of a method that cannot refused, its ``finetune.objective`` decided, its ``prepare``
        applied, the society and its own ``check`` checked, the start weights (``method.weights``) found."""
        method, iterations = settings.method, settings.finetune.iterations
        if iterations and not self.finetunes:
            tuned = ", ".join(m for m in METHODS if METHODS.get(m).finetunes)
            raise ConfigError(f"finetune.iterations: method {self.name} does not fine-tune (got {iterations}); "
                              f"set finetune.iterations=0, or choose a method that does ({tuned})")
        method = replace(method, spec=self, label=method.label or self.name)
        settings = replace(settings, method=method, finetune=with_objective(settings.finetune, method))
        if self.prepare:
            settings = load(self.prepare)(settings)
        settings.society.check(settings.debate.agents, method.label, method.shared, self.mixed,
                               settings.finetune.global_first)
        if self.check:
            load(self.check)(settings)
        if method.weights:
            start_weights(settings, make_society(settings))  # every model of the society has its weights there
        return settings


METHODS: Registry[Method] = Registry("method", "method.name")
SFT_FIRST, DPO_FIRST, GRPO = ("sft", "dpo", "sft+dpo"), ("dpo", "sft", "sft+dpo"), ("grpo",)
RLVR = "multiagent_rlvr"  # the GRPO method whose reward reads the gold answer
for _method in (
    Method("single", LOOP, finetunes=False, shared=False, prepare="mafl.methods:first_base"),
    Method("majority", "mafl.methods.majority:run_majority", finetunes=False, shared=False,
           prepare="mafl.methods:majority_samples", check="mafl.methods.majority:check_majority", mixed=False),
    Method("self_refine", LOOP, finetunes=False, shared=False, check="mafl.methods:check_self_refine"),
    Method("debate", LOOP, finetunes=False, shared=False),
    Method("star", "mafl.methods.star:run_star", finetunes=True, shared=True, check="mafl.methods.star:check_star"),
    Method("majority_ft", LOOP, finetunes=True, shared=True, objectives=SFT_FIRST),
    Method("multiagent_ft", LOOP, finetunes=True, shared=False, objectives=SFT_FIRST),
    Method("majority_dpo", LOOP, finetunes=True, shared=True, objectives=DPO_FIRST),
    Method("multiagent_dpo", LOOP, finetunes=True, shared=False, objectives=DPO_FIRST),
    Method("majority_grpo", LOOP, finetunes=True, shared=True, objectives=GRPO, check="mafl.methods:check_reward",
           mixed=False),
    Method("multiagent_grpo", LOOP, finetunes=True, shared=False, objectives=GRPO, check="mafl.methods:check_reward"),
    Method("multiagent_rlvr", LOOP, finetunes=True, shared=False, objectives=GRPO, check="mafl.methods:check_reward"),
):
    METHODS.register(_method.name, _method)


def tuned_iterations(method: str, iterations: int) -> int:
    """``${mafl_tuned_iterations:${method.name},N}`` in a preset that sets the iterations of any method (e.g.
    ``debug=smoke``): N for a method that fine-tunes, 0 for one that does not."""
    return iterations if method not in METHODS or METHODS.get(method).finetunes else 0


if not OmegaConf.has_resolver("mafl_tuned_iterations"):
    OmegaConf.register_new_resolver("mafl_tuned_iterations", tuned_iterations)


def with_objective(finetune: FinetuneSettings, method: MethodSettings) -> FinetuneSettings:
    """``finetune`` with its ``objective`` decided: the one asked for, or the method's default (the first of
    ``Method.objectives``); a ConfigError for one the method cannot train with, or general data mixed into sets
    that nothing trains on."""
    spec = method.spec
    objective = finetune.objective or spec.objectives[0]
    if spec.finetunes and objective not in spec.objectives:
        raise ConfigError(f"finetune.objective: method {spec.name} trains with {', '.join(spec.objectives)} "
                          f"(got {objective})")
    if objective in ("dpo", "grpo") and finetune.mix_general is not None and finetune.iterations:
        raise ConfigError(f"finetune.mix_general: general data mixes into the SFT sets, which objective {objective} "
                          f"does not train on; use finetune.objective=sft+dpo, or mix_general=null")
    return replace(finetune, objective=objective)


def check_reward(settings: Settings) -> None:
    """The GRPO methods: a reward that reads the gold answer is ``method=multiagent_rlvr`` (so its rows say so in
    every table), and multiagent_rlvr's reward reads it."""
    from mafl.finetune.rewards import get_reward

    method, reward = settings.method.name, settings.finetune.reward
    reads_gold = get_reward(reward).reads_gold
    if reads_gold and method != RLVR:
        raise ConfigError(f"finetune.reward: {reward} reads the gold answer, which method {method} never does; "
                          f"RL from the gold answer is method={RLVR}")
    if method == RLVR and not reads_gold:
        raise ConfigError(f"finetune.reward: method {RLVR} rewards agreement with the gold answer "
                          f"(finetune.reward=gold, got {reward}); RL from the society's vote is method=multiagent_grpo")


def majority_samples(settings: Settings) -> Settings:
    """``method=majority``: ``method.samples`` independent answers per problem in one round (default N x R, the
    debate's number of answers per problem, so the baseline is compute-matched), then their majority vote. With
    ``method.match=tokens`` the number of answers follows the debate's tokens (mafl/methods/majority.py), whose
    settings are kept as ``method.reference_debate``."""
    debate, method = settings.debate, settings.method
    if method.match == "tokens":
        if method.samples is not None:
            raise ConfigError(f"method.samples: method.match=tokens samples until the debate's tokens are spent, so "
                              f"it takes no number of answers (got {method.samples}); set method.samples=null")
        return replace(settings, debate=replace(debate, agents=1, rounds=1),
                       method=replace(method, reference_debate=debate))
    samples = method.samples or debate.agents * debate.rounds
    return replace(settings, debate=replace(debate, agents=samples, rounds=1))


def check_self_refine(settings: Settings) -> None:
    """``method=self_refine`` (conf/method/self_refine.yaml): its later rounds show no other agent's answer."""
    if settings.debate.context != "self":
        raise ConfigError(f"debate.context: method self_refine reviews each agent's own answer only, which is "
                          f"debate.context=self (got {settings.debate.context})")
    if settings.debate.rounds > 1 and not settings.dataset.prompts.review:
        raise ConfigError(f"dataset.review_prompt: method self_refine asks each agent to review its answer with this "
                          f"template (field question); dataset {settings.dataset.name} has none")


def first_base(settings: Settings) -> Settings:
    """``method=single`` of a mixed society: its one agent is agent 0, on agent 0's base (``society.models[0]``)."""
    society = settings.society
    if not society.mixed or settings.debate.agents != 1:
        return settings
    return replace(settings, society=replace(society, models=society.models[:1]))


def settle(settings: Settings) -> Settings:
    """``settings`` as the registered method ``method.name`` runs them (:meth:`Method.settle`); a ConfigError
    listing the registered methods for a name that is none."""
    return METHODS.get(settings.method.name).settle(settings)


def run_method(run_dir: Path, settings: Settings) -> dict:
    return settings.method.spec.run(run_dir, settings)
