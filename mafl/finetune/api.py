"""``finetune=openai``: each model's fine-tune as a job of an OpenAI-compatible fine-tuning API (the paper's GPT-3.5
rows), a launcher of an iteration's fine-tunes (``finetune.launcher: openai``) with the launchers' contract:
``OpenAILauncher(settings, run_dir)``, ``check(settings)``, ``run(jobs) -> records``, ``close()``.

For each job (a model, its set, where its weights go): the set is uploaded as chat JSONL (``purpose=fine-tune``;
each example is its prompt's messages and the assistant's response), and one fine-tuning job is created on the
base model (``model.path``, e.g. ``gpt-3.5-turbo-0125``) or, with ``finetune.init=previous``, on the model
fine-tuned at the previous iteration; ``finetune.openai.hyperparameters`` (and ``suffix``) are passed straight
through. Every job of a wave is created first, then all are polled together (``poll_seconds``) with a progress
display of their states.

Nothing is paid twice: the uploaded file's id and the job's id are saved in ``iter_k/models/<model>.openai.json``
as soon as they exist, so a restarted run re-attaches to a job that is queued, running or finished. A job that
fails stops the run (:class:`~mafl.errors.RunError`) with the API's reason. On success the fine-tuned model's id
is written to ``iter_k/models/<model>/api_model.json`` (the folder :class:`~mafl.backends.openai_api.OpenAIBackend`
speaks with) and the job's record to ``iter_k/models/<model>.json``. A set smaller than ``min_examples`` (the API
refuses fewer than 10) trains nothing: the model stays the one it starts from, as the local trainer does with an
empty set. The API key is read from the environment variable ``api_key_env`` names.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Sequence

from mafl.errors import ConfigError, RunError, integer, known_keys, number
from mafl.rundir import atomic_folder, atomic_write_json, atomic_write_text

OPTIONS = ("base_url", "api_key_env", "hyperparameters", "suffix", "poll_seconds", "min_examples", "timeout",
           "max_retries")
DONE, FAILED = "succeeded", ("failed", "cancelled")


def chat_jsonl(set_path: str | Path) -> str:
    """A fine-tuning set as the API's chat JSONL: one ``{"messages": [...prompt, assistant response]}`` a line."""
    from mafl.finetune.sets import FinetuneSet

    rows = [{"messages": [dict(m) for m in e.prompt] + [{"role": "assistant", "content": e.response}]}
            for e in FinetuneSet.load(set_path).examples]
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def api_model(folder: str | Path | None) -> str | None:
    """The API model id held by a model folder (``api_model.json``), or None."""
    from mafl.backends.openai_api import API_MODEL_FILE

    if folder is None or not (Path(folder) / API_MODEL_FILE).exists():
        return None
    return json.loads((Path(folder) / API_MODEL_FILE).read_text())["model"]


class OpenAILauncher:
    name = "openai"

    def __init__(self, settings, run_dir: Path, base_model=None):
        from mafl.backends.openai_api import OPENAI_URL

        self.options = dict(settings.options(self.name))
        self.run_dir = Path(run_dir)
        self.url = str(self.options.get("base_url") or os.environ.get("OPENAI_BASE_URL") or OPENAI_URL).rstrip("/")
        self._client = None

    @classmethod
    def check(cls, settings) -> None:
        options = settings.options(cls.name)
        if "api_key" in options:
            raise ConfigError("finetune.openai.api_key: the key goes in the environment variable that "
                              "finetune.openai.api_key_env names, never in the config")
        known_keys(options, f"finetune.{cls.name}", OPTIONS)
        if settings.mode != "lora":
            raise ConfigError("finetune.mode: an API fine-tunes its own way; keep mode=lora with launcher=openai")
        if settings.objective not in (None, "sft"):
            raise ConfigError(f"finetune.objective: launcher=openai runs SFT jobs only (got {settings.objective}); "
                              "use finetune.objective=sft, or a local launcher")
        if "poll_seconds" in options:
            number(options, "poll_seconds", "finetune.openai", low=0.0)
        if "min_examples" in options:
            integer(options, "min_examples", "finetune.openai", low=1)

    # -- the client ------------------------------------------------------------------------------------------
    def client(self):
        if self._client is None:
            from mafl.backends.openai_api import OPENAI_URL, import_openai

            openai = import_openai()
            url = self.url
            key_env = self.options.get("api_key_env") or "OPENAI_API_KEY"
            key = os.environ.get(key_env)
            if not key and url == OPENAI_URL:
                raise ConfigError(f"finetune.openai.api_key_env: the environment variable {key_env} holds no API key")
            self._client = openai.OpenAI(base_url=url, api_key=key or "EMPTY",
                                         timeout=float(self.options.get("timeout") or 600),
                                         max_retries=int(self.options.get("max_retries", 5)))
        return self._client

    def _fail(self, what: str, e: Exception) -> RunError:
        from mafl.backends.openai_api import one_line

        status = getattr(e, "status_code", None)
        return RunError(f"finetune=openai: {self.url} {'answered ' + str(status) if status else 'failed'} to {what}: "
                        f"{one_line(getattr(e, 'message', e))}")

    # -- one job's state in the run folder -------------------------------------------------------------------
    @staticmethod
    def state_path(job) -> Path:
        out = Path(job.out_dir)
        return out.parent / f"{out.name}.openai.json"

    def _state(self, job) -> dict:
        path = self.state_path(job)
        return json.loads(path.read_text()) if path.exists() else {}

    def _save(self, job, state: dict) -> None:
        atomic_write_json(self.state_path(job), state)

    def _start(self, job) -> dict:
        """Upload the set and create the job, unless an earlier process of the run did (then: its state)."""
        state = self._state(job)
        if state.get("job_id"):
            return state
        from mafl.finetune.sets import FinetuneSet

        examples = len(FinetuneSet.load(job.set_path))
        base = api_model(job.init) or (job.init if job.init and not Path(job.init).exists() else None) or job.base_path
        state.update(model=job.model, base=base, examples=examples)
        if examples < int(self.options.get("min_examples", 10)):
            state.update(status="skipped", fine_tuned_model=base,
                         reason=f"{examples} examples, fewer than finetune.openai.min_examples")
            self._save(job, state)
            return state
        client = self.client()
        if not state.get("file_id"):
            try:
                f = client.files.create(file=(f"{job.model}.jsonl", chat_jsonl(job.set_path).encode()),
                                        purpose="fine-tune")
            except Exception as e:  # noqa: BLE001 - any failure of the API, one line
                raise self._fail(f"the upload of {job.model}'s set", e) from None
            state["file_id"] = f.id
            self._save(job, state)  # paid for: never uploaded again
        extra = {k: self.options[k] for k in ("hyperparameters", "suffix") if self.options.get(k) is not None}
        try:
            created = client.fine_tuning.jobs.create(training_file=state["file_id"], model=base,
                                                     seed=int(job.seed) & 0x7FFFFFFF, **extra)
        except Exception as e:  # noqa: BLE001
            raise self._fail(f"the fine-tuning job of {job.model}", e) from None
        state.update(job_id=created.id, status=created.status)
        self._save(job, state)  # from now on a restarted run re-attaches to this job
        return state

    def _finish(self, job, state: dict) -> dict:
        from mafl.backends.openai_api import API_MODEL_FILE

        with atomic_folder(job.out_dir) as tmp:
            atomic_write_text(tmp / API_MODEL_FILE, json.dumps(
                {"model": state["fine_tuned_model"], "job": state.get("job_id"), "base": state["base"]}) + "\n")
        record = {"out_dir": str(job.out_dir), "mode": "openai", "num_examples": state["examples"],
                  "trained": state["status"] == DONE, "losses": [], "model": state["fine_tuned_model"],
                  "job_id": state.get("job_id"), "trained_tokens": state.get("trained_tokens"),
                  "init": job.init, "seconds": state.get("seconds")}
        if state.get("reason"):
            record["reason"] = state["reason"]
        atomic_write_json(job.record, record)
        return record

    # -- the launcher ----------------------------------------------------------------------------------------
    def run(self, jobs: Sequence) -> list[dict]:
        """Start every job (or re-attach), poll them all until each succeeded, then write their models."""
        from mafl.progress import stage

        states = {job.model: self._start(job) for job in jobs}
        waiting = [j for j in jobs if states[j.model].get("job_id") and states[j.model].get("status") != DONE]
        poll = float(self.options.get("poll_seconds", 10))
        start = time.time()
        with stage(f"fine-tuning jobs ({self.url})", total=len(jobs), unit="job") as bar:
            bar.update(len(jobs) - len(waiting))
            while waiting:
                for job in list(waiting):
                    state = states[job.model]
                    try:
                        remote = self.client().fine_tuning.jobs.retrieve(state["job_id"])
                    except Exception as e:  # noqa: BLE001
                        raise self._fail(f"a status request for job {state['job_id']}", e) from None
                    if remote.status != state.get("status"):
                        state["status"] = remote.status
                        self._save(job, state)
                    if remote.status in FAILED:
                        error = getattr(remote, "error", None)
                        reason = getattr(error, "message", None) or remote.status
                        raise RunError(f"finetune=openai: the fine-tuning job {state['job_id']} of {job.model} "
                                       f"{remote.status}: {reason}")
                    if remote.status == DONE:
                        state.update(fine_tuned_model=remote.fine_tuned_model, seconds=time.time() - start,
                                     trained_tokens=getattr(remote, "trained_tokens", None))
                        self._save(job, state)
                        waiting.remove(job)
                        bar.update(1)
                counts = {}
                for j in waiting:
                    counts[states[j.model]["status"]] = counts.get(states[j.model]["status"], 0) + 1
                bar.set_note(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
                if waiting:
                    time.sleep(poll)
        return [self._finish(job, states[job.model]) for job in jobs]

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
