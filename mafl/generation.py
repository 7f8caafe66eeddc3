"""Generation for a run: the backend (started lazily, holding exactly one society's fine-tuned weights), the
mixed society's routing of each agent to its base's backend, and the base model lent to the fine-tunes (or the
backend freed for them)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mafl.config import Settings
from mafl.debate.society import Society


@dataclass
class Generation:
    settings: Settings
    run_dir: Path  # where a backend that keeps a usage ledger (an API's) writes it
    base_path: str  # the base model's path (a mixed society: agent 0's base's)
    base_paths: dict = field(default_factory=dict)  # a mixed society (society.models): base name -> its path
    progress: bool = True
    _backend: Any = field(default=None, repr=False)
    _loaded: dict = field(default_factory=dict, repr=False)

    def backend(self, society: Society, stage: str | None = None):
        """The generation backend, holding exactly ``society``'s fine-tuned weights; ``stage`` names what its
        next requests are for (``iter_k/train``...) in the usage ledger of a backend that keeps one (an API's)."""
        if self._backend is None and society.mixed:
            from mafl.backends import backend_class
            from mafl.backends.society import SocietyBackend

            bases = {name: (self.base_paths[name], model) for name, model in self.settings.society.bases.items()}
            self._backend = SocietyBackend.build(
                backend_class(self.settings.backend.name), bases, society.routes(), device=self.settings.device,
                progress=self.progress, **self.settings.backend.options)
            self._loaded = {}
        if self._backend is None:
            from mafl.backends import backend_class

            backend = self.settings.backend
            self._backend = backend_class(backend.name)(
                self.base_path, dtype=self.settings.model.dtype, device=self.settings.device,
                chat_template=self.settings.model.chat_template,
                trust_remote_code=self.settings.model.trust_remote_code,
                progress=self.progress, **backend.options,
            )
            self._loaded = {}
            if getattr(self._backend, "usage", None) is not None:
                self._backend.usage.attach(self.run_dir)
        if stage is not None and getattr(self._backend, "usage", None) is not None:
            self._backend.usage.stage = stage
        for name in [n for n in self._loaded if n not in society.weights]:
            self._backend.unload(name)
            del self._loaded[name]
        for name, path in society.weights.items():
            if self._loaded.get(name) != path:
                self._backend.load_adapter(name, path)
                self._loaded[name] = path
        return self._backend

    def base_of(self, model: str) -> tuple[str, Any]:
        """(path, :class:`~mafl.models.ModelSettings`) of the base that ``model`` of the society is fine-tuned
        from: its agent's base in a mixed society, else the run's model."""
        society = self.settings.society
        if not society.mixed:
            return self.base_path, self.settings.model
        from mafl.debate.society import agent_of

        base = society.models[agent_of(model)]
        return self.base_paths[base.name], base

    def lend_base(self):
        """Before the fine-tunes of an iteration: the backend's base model, when LoRA fine-tunes can train on it
        in this process (``finetune.launcher=local`` with ``share_base``, one process per fine-tune, a backend
        that lends it: hf), so it is not loaded again; else None, and the backend is freed for fine-tuning (a mixed
        society's backend lends none: each fine-tune loads its own agent's base)."""
        ft = self.settings.finetune
        lendable = (ft.mode == "lora" and ft.launcher == "local" and ft.accelerate is None
                    and ft.options("local").get("share_base", True) and hasattr(self._backend, "lend_base"))
        if not lendable:
            self.release_backend()
            return None
        self._loaded = {}  # the adapters are unloaded; backend() loads the next society's
        return self._backend.lend_base()

    def release_backend(self) -> None:
        """Free the backend's memory (fine-tuning loads its own copy of the base model)."""
        if self._backend is not None:
            self._backend.close()
            self._backend, self._loaded = None, {}
            import gc

            gc.collect()
