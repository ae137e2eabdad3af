"""A carrier is one registered plugin: its settings, its stream protocol, its webhook routes, and what it can do
to a call (dial, transfer, hang up).

``carriers`` finds them the way provider registries do: every module of this package
that registers one (so adding a carrier touches no other module), and third-party
packages under the entry-point group ``parley.carriers``. The app mounts each
carrier's ``router``; ``POST /v1/calls`` offers those that ``dial``.
"""

from __future__ import annotations

import importlib
import pkgutil
import uuid
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, ClassVar, TypeVar
from urllib.parse import urlencode

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from parley.calls.identity import CallTarget
from parley.config import Settings

if TYPE_CHECKING:
    from fastapi import APIRouter

    from parley.telephony.state import TelephonyState
    from parley.telephony.wire import StreamProtocol

C = TypeVar("C", bound="Carrier")


class CarrierSettings(BaseSettings):
    """A carrier's own settings, read from the same ``PARLEY_*`` environment (and .env) as parley.config.Settings:
    a field ``twilio_auth_token`` is ``PARLEY_TWILIO_AUTH_TOKEN``. Obtain them with ``Settings.section``."""

    model_config = SettingsConfigDict(env_prefix="PARLEY_", env_file=".env", extra="ignore")

    #: fields that must all be set (and not empty) before the carrier takes anything: until then it is off,
    #: every webhook refused and every stream closed, since an unset secret never means "believe anyone"
    credentials: ClassVar[tuple[str, ...]] = ()

    def missing(self) -> list[str]:
        """The environment variables still to set before the carrier takes anything (empty: it is configured)."""
        missing = []
        for name in self.credentials:
            value = getattr(self, name)
            text = value.get_secret_value() if isinstance(value, SecretStr) else value
            if not text:
                missing.append(f"PARLEY_{name.upper()}")
        return missing


@dataclass(frozen=True)
class Outbound:
    """A call to place: the agent ``target`` calls ``to``; Parley's record of it is ``call_id``."""

    target: CallTarget
    call_id: uuid.UUID
    to: str
    from_: str | None
    #: where the carrier reaches Parley: PARLEY_PUBLIC_URL, else the address the request came in on
    base: str
    #: ask the carrier to detect an answering machine (its result reaches the voice or status webhook)
    machine_detection: bool = False
    #: a voicemail message is to be left if a machine answers: detection waits for the beep where it can
    leave_message: bool = False

    @property
    def query(self) -> str:
        """The query of the answer URL the dialled call fetches: which agent and tenant take it, and its record."""
        target = self.target
        return urlencode({"agent": str(target.agent_id), "tenant": str(target.tenant_id), "call": str(self.call_id)})


class Carrier:
    """One carrier or PBX. A subclass declares the four class attributes and overrides what the carrier can do."""

    #: the path segment of its routes (/telephony/<name>/…), the ``provider`` of its calls, its log name
    name: ClassVar[str]
    settings_model: ClassVar[type[CarrierSettings]]
    #: its media stream's wire format (a new instance per connection)
    protocol: ClassVar[type[StreamProtocol]]
    #: its webhooks and stream endpoints, made with :func:`parley.telephony.webhooks.carrier_router`
    router: ClassVar[APIRouter]

    def settings(self, settings: Settings) -> CarrierSettings:
        return settings.section(self.settings_model)

    @property
    def dials(self) -> bool:
        """Whether ``POST /v1/calls`` offers it as a ``provider``."""
        return type(self).dial is not Carrier.dial

    @property
    def transfers(self) -> bool:
        return type(self).transfer is not Carrier.transfer

    async def dial(self, state: TelephonyState, call: Outbound) -> str:
        """Start the outbound call ``call``; returns the carrier's id for it."""
        raise NotImplementedError(f"{self.name} cannot dial out")

    async def transfer(self, state: TelephonyState, call_id: str, to: str, base_url: str) -> None:
        """Move the live call ``call_id`` (the carrier's id) to ``to``: a phone number or a sip: URI."""
        raise NotImplementedError(f"{self.name} cannot transfer calls")

    async def hang_up(self, state: TelephonyState, call_id: str) -> None:
        """End the call through the carrier's API before the stream closes. The default does nothing: the
        protocol's hang-up message, or closing the stream, ends the call."""


class UnknownCarrier(LookupError):
    pass


class CarrierRegistry:
    """Name → carrier, filled by the modules that register one (found on first use)."""

    def __init__(self, package: str, group: str) -> None:
        self.package, self.group = package, group
        self._carriers: dict[str, Carrier] = {}
        self._discovered = False

    def register(self, cls: type[C]) -> type[C]:
        """Class decorator: ``@carriers.register`` on a :class:`Carrier` subclass."""
        self._carriers[cls.name] = cls()
        return cls

    def get(self, name: str) -> Carrier:
        self.discover()
        try:
            return self._carriers[name]
        except KeyError:
            raise UnknownCarrier(f"unknown carrier {name!r}; known: {', '.join(self._carriers)}") from None

    def all(self) -> list[Carrier]:
        self.discover()
        return list(self._carriers.values())

    def names(self) -> list[str]:
        return [carrier.name for carrier in self.all()]

    def discover(self) -> None:
        """Import every module of the package (a carrier module registers itself), then the entry points."""
        if self._discovered:
            return
        self._discovered = True
        package = importlib.import_module(self.package)
        for module in pkgutil.iter_modules(package.__path__, f"{self.package}."):
            importlib.import_module(module.name)
        for ep in entry_points(group=self.group):
            ep.load()


carriers = CarrierRegistry("parley.telephony", "parley.carriers")
