"""Provider registries: a provider is one module that registers one name.

``registry.create("piper", {...})`` imports ``parley.services.<kind>.piper`` on first
use (so adding a provider touches no other module), or a third-party plugin
registered under the entry-point group ``parley.<kind>``. Each provider declares
its options as a pydantic model, so a bad option in an agent document is reported
with its field name before any call starts.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict

from parley.metrics.providers import instrument


class ProviderOptions(BaseModel):
    """Base for a provider's options; unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class Provider(Protocol):
    Options: ClassVar[type[ProviderOptions]]


T = TypeVar("T")


class UnknownProvider(LookupError):
    pass


class ProviderUnavailable(UnknownProvider):
    """The provider exists but cannot run on this host (its native library failed the start-up self-check)."""


class ProviderPackageMissing(UnknownProvider):
    """The provider's module is there but a package it needs is not installed (an optional extra)."""


class Registry(Generic[T]):
    """Name → provider class for one kind of service (vad, stt, llm, tts)."""

    def __init__(self, kind: str, modules: dict[str, str] | None = None) -> None:
        self.kind = kind
        self._classes: dict[str, type[T]] = {}
        self._modules = modules or {}  # provider name → module name, where they differ
        self._unavailable: dict[str, str] = {}  # provider name → why it cannot run here

    def disable(self, name: str, reason: str) -> None:
        """Refuse to create ``name`` in this process (documents naming it still validate)."""
        self._unavailable[name] = reason

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def deco(cls: type[T]) -> type[T]:
            self._classes[name] = cls
            cls.provider_name = name  # type: ignore[attr-defined]
            instrument(self.kind, cls)  # its requests counted and timed by provider (parley.metrics.providers)
            return cls

        return deco

    def get(self, name: str) -> type[T]:
        if name not in self._classes:
            self._load(name)
        try:
            return self._classes[name]
        except KeyError:
            raise UnknownProvider(
                f"unknown {self.kind} provider {name!r}; known: {', '.join(self.names()) or 'none'}"
            ) from None

    def options(self, name: str, options: dict[str, Any] | None = None) -> ProviderOptions:
        """Validate ``options`` for provider ``name`` (raises pydantic.ValidationError)."""
        cls = self.get(name)
        opts_cls: type[ProviderOptions] = getattr(cls, "Options", ProviderOptions)
        return opts_cls.model_validate(options or {})

    def create(self, name: str, options: dict[str, Any] | None = None) -> T:
        if name in self._unavailable:
            raise ProviderUnavailable(
                f"{self.kind} provider {name!r} cannot run on this host: {self._unavailable[name]}"
            )
        cls = self.get(name)
        return cls(self.options(name, options))  # type: ignore[call-arg]

    def names(self) -> list[str]:
        return sorted(self._classes)

    def _load(self, name: str) -> None:
        module = f"parley.services.{self.kind}.{self._modules.get(name, name.replace('-', '_'))}"
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                msg = f"{self.kind} provider {name!r} needs a missing package: {exc.name}"
                raise ProviderPackageMissing(msg) from exc
        if name in self._classes:
            return
        for ep in entry_points(group=f"parley.{self.kind}"):
            if ep.name == name:
                ep.load()
                return
