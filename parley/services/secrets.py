"""Provider secrets: documents name a credential, the call's :class:`SecretSource` supplies its value.

A provider's options declare which fields are secrets (:class:`SecretField`) and which are outbound URLs
(``url_fields``). Before a provider is made, :func:`resolve_options` replaces a reference by the value, asked of
the source for this call:

* ``parley serve`` uses the tenant's stored credentials (:class:`parley.store.credentials.TenantSecrets`) and
  never the process environment, so no tenant can name a server variable, whatever host it points at;
* the local CLI (``parley call agent.yaml``) uses :class:`EnvSecrets`: only variables the operator listed in
  ``PARLEY_PROVIDER_ENV_ALLOW``, and never a ``PARLEY_*`` one.

Messages name the field and the credential, never a value.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel

#: headers that carry credentials: a stored document may not set them (its readers would see the value)
SECRET_HEADERS = frozenset(
    (
        "authorization",
        "proxy-authorization",
        "api-key",
        "x-api-key",
        "cookie",
        "ocp-apim-subscription-key",
        "api-subscription-key",
        "xi-api-key",
    )
)


class CredentialError(ValueError):
    """A secret reference that cannot be used here; the message names the field, never a value."""


@dataclass(frozen=True)
class SecretField:
    """One secret option: its inline value field and the fields that reference it instead."""

    value: str  # e.g. "api_key": filled here; refused in documents stored through the API
    credential: str  # e.g. "api_key_credential": a tenant credential's name
    env: str  # e.g. "api_key_env": an environment variable, for local documents only


@dataclass(frozen=True)
class Problem:
    """One refused field of a document: where (``("llm", "options", "api_key")``) and why."""

    loc: tuple[str, ...]
    msg: str


class SecretSource(Protocol):
    """Where one call's secrets come from."""

    async def credential(self, name: str, host: str) -> str:
        """The value of credential ``name``, to be sent to ``host``; CredentialError if absent or not for it."""
        ...

    def env(self, name: str) -> str:
        """The value of environment variable ``name``; CredentialError if not allowed or unset."""
        ...


class NoSecrets:
    """A call without a source (start-up warm-up): any reference is an error."""

    async def credential(self, name: str, host: str) -> str:
        raise CredentialError(f"credential {name!r} is not available here")

    def env(self, name: str) -> str:
        raise CredentialError(f"environment variable {name!r} is not available here")


class EnvSecrets:
    """The operator's environment, for documents the operator runs locally; only allow-listed names."""

    def __init__(self, allow: Iterable[str], environ: Mapping[str, str] | None = None) -> None:
        self.allow = frozenset(allow)
        self.environ = os.environ if environ is None else environ

    @classmethod
    def from_settings(cls) -> EnvSecrets:
        from parley.config import Settings

        return cls(Settings().provider_env_allow)

    async def credential(self, name: str, host: str) -> str:
        raise CredentialError(
            f"credential {name!r}: stored credentials belong to agents served by parley serve; "
            "a local document may use api_key_env"
        )

    def env(self, name: str) -> str:
        if name.upper().startswith("PARLEY_"):
            raise CredentialError(f"environment variable {name!r}: PARLEY_* variables are never provider keys")
        if name not in self.allow:
            raise CredentialError(f"environment variable {name!r} is not listed in PARLEY_PROVIDER_ENV_ALLOW")
        value = self.environ.get(name)
        if not value:
            raise CredentialError(f"environment variable {name!r} is not set")
        return value


def _fields(options_cls: type[BaseModel]) -> tuple[tuple[SecretField, ...], tuple[str, ...]]:
    secrets: tuple[SecretField, ...] = getattr(options_cls, "secret_fields", ())
    urls: tuple[str, ...] = getattr(options_cls, "url_fields", ())
    return secrets, urls


def _header_problems(stage: str, options_cls: type[BaseModel], options: Mapping[str, Any]) -> list[Problem]:
    problems = []
    for name in getattr(options_cls, "header_fields", ()):
        headers = options.get(name)
        for header in headers if isinstance(headers, dict) else ():
            if str(header).strip().lower() in SECRET_HEADERS:
                msg = "a credential header would be readable by every viewer; use a stored credential instead"
                problems.append(Problem((stage, "options", name, str(header)), msg))
    return problems


def destination_host(options_cls: type[BaseModel], options: Mapping[str, Any]) -> str:
    """The host a provider's secrets go to: that of its first URL option that is set (or its default)."""
    import httpx

    _, urls = _fields(options_cls)
    for name in urls:
        value = options.get(name)
        if value is None:
            info = options_cls.model_fields.get(name)
            value = info.default if info is not None else None
        if isinstance(value, str) and value:
            try:
                return httpx.URL(value).host.lower()
            except (httpx.InvalidURL, ValueError):
                return ""
    return ""


async def resolve_options(
    options_cls: type[BaseModel], options: Mapping[str, Any], source: SecretSource, where: str
) -> dict[str, Any]:
    """``options`` with each referenced secret filled in from ``source``; ``where`` names the stage (``llm``)."""
    resolved = dict(options)
    secrets, _ = _fields(options_cls)
    for f in secrets:
        credential, env = options.get(f.credential), options.get(f.env)
        if credential is None and env is None:
            continue
        if sum(x is not None for x in (credential, env, options.get(f.value))) > 1:
            raise CredentialError(f"{where}.options: give only one of {f.value}, {f.credential}, {f.env}")
        try:
            if credential is not None:
                resolved[f.value] = await source.credential(str(credential), destination_host(options_cls, options))
            else:
                resolved[f.value] = source.env(str(env))
        except CredentialError as exc:
            field = f.credential if credential is not None else f.env
            raise CredentialError(f"{where}.options.{field}: {exc}") from None
    return resolved


def stored_document_problems(
    stages: Iterable[tuple[str, type[BaseModel], Mapping[str, Any]]], url_problem: Callable[[str], str | None]
) -> list[Problem]:
    """What a document stored through the API may not hold: inline secrets, environment references, URLs the
    outbound guard refuses outright. ``stages`` is (stage, options class, options); ``url_problem(url)`` says why a
    URL is refused, or None."""
    problems: list[Problem] = []
    for stage, options_cls, options in stages:
        secrets, urls = _fields(options_cls)
        for f in secrets:
            if options.get(f.value) is not None:
                msg = "an inline secret would be readable by every viewer; store it with PUT /v1/credentials/NAME "
                msg += f"and set {f.credential}: NAME"
                problems.append(Problem((stage, "options", f.value), msg))
            if options.get(f.env) is not None:
                msg = f"agents served by Parley cannot read its environment; use {f.credential} (PUT /v1/credentials)"
                problems.append(Problem((stage, "options", f.env), msg))
        for name in urls:
            value = options.get(name)
            if isinstance(value, str) and (why := url_problem(value)):
                problems.append(Problem((stage, "options", name), f"outbound URL {why}"))
        problems += _header_problems(stage, options_cls, options)
    return problems


async def resolve_provider_options(
    registry: Any, provider: str, options: dict[str, Any], source: SecretSource, where: str
) -> dict[str, Any]:
    """A stage's options with the secrets it references filled in (unchanged for providers without secrets, and
    for an unknown provider: creating it reports that)."""
    from parley.services.registry import UnknownProvider

    try:
        options_cls = getattr(registry.get(provider), "Options", None)
    except UnknownProvider:
        return options
    if options_cls is None or not getattr(options_cls, "secret_fields", ()):
        return options
    return await resolve_options(options_cls, options, source, where)
