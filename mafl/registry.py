"""A registry per kind of component (task, method, backend): names, each filled in next to its component's code
and read lazily, the way lm-evaluation-harness registers its models. An entry is a ``"module:attr"`` string, or a
small object that names one, so a component's module (a GPU-only backend, say) is imported only when chosen.

Validation and error messages read the registry: a name that is not registered is refused with a one-line
``ConfigError`` that lists the registered names (``backend.name: 'x' is not one of hf, vllm``). Where a component
is a class or factory (a task, a backend), the config may also name one outside the registry by its
``"module:attr"`` (``dataset.task: mypackage.tasks:MyTask``): a new task is then one module and one yaml file.
"""
from __future__ import annotations

import importlib
from typing import Any, Generic, Iterator, TypeVar

from mafl.errors import ConfigError

T = TypeVar("T")


def load(target: str) -> Any:
    """The object a ``"module:attr"`` string names, imported now."""
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


class Registry(Generic[T]):
    """Names of one kind of component, in registration order; ``key`` is the config key that chooses one."""

    def __init__(self, kind: str, key: str):
        self.kind, self.key = kind, key
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._entries[name] = entry
        return entry

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def get(self, name: str) -> T:
        """The entry of ``name``; a ConfigError naming the key and every registered name when there is none."""
        if name not in self._entries:
            raise ConfigError(f"{self.key}: {name!r} is not one of {', '.join(self._entries)}")
        return self._entries[name]

    def load(self, name: str) -> Any:
        """The object registered as a ``"module:attr"`` string under ``name``, or named by ``name`` itself when it
        is a ``"module:attr"`` string, imported now."""
        if name in self._entries or not (isinstance(name, str) and ":" in name):
            return load(self.get(name))
        try:
            return load(name)
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"{self.key}: cannot import {name} ({type(e).__name__}: {e})") from None
