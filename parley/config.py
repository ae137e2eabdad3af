"""One Settings object, from ``PARLEY_*`` environment variables (and a .env file).

Every production part is chosen here, by configuration only: the database by
``PARLEY_DATABASE_URL``, Redis by ``PARLEY_REDIS_URL``, recordings by
``PARLEY_STORAGE_URL``. Unset, each falls back to its embedded default under
``PARLEY_DATA_DIR``.
"""

from __future__ import annotations

import ipaddress
import socket
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    SecretStr,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _networks(value: Any) -> list[str]:
    """``10.0.0.1,10.1.0.0/16`` (or a list) -> normalised networks; a typo fails at start-up, never silently."""
    items = value.split(",") if isinstance(value, str) else value
    return [str(ipaddress.ip_network(str(item).strip(), strict=False)) for item in items if str(item).strip()]


def _words(value: Any) -> list[str]:
    """``a, b c`` (or a list) -> ["a", "b", "c"]: lists an operator types into one environment variable."""
    items = value.replace(",", " ").split() if isinstance(value, str) else value
    return [str(item).strip() for item in items if str(item).strip()]


def _outbound(value: list[str]) -> list[str]:
    from parley.net.ssrf import OutboundPolicy

    OutboundPolicy.parse(value)  # a typo fails at start-up, never silently
    return value


S = TypeVar("S", bound=BaseSettings)


class Settings(BaseSettings):
    """The service's settings. A plugin's own settings (a carrier's) are a model of their own, read from the same
    environment: :meth:`section`."""

    model_config = SettingsConfigDict(env_prefix="PARLEY_", env_file=".env", extra="ignore")

    # --- where things live ---------------------------------------------------------
    data_dir: Path = Path(".parley")
    database_url: str | None = Field(None, description="sqlite+aiosqlite:///… or postgresql+asyncpg://…")
    redis_url: str | None = Field(None, description="redis://host:6379/0 for rate limits and live state across workers")
    storage_url: str | None = Field(None, description="s3://bucket[/prefix] or az://container[/prefix]")
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    azure_storage_connection_string: SecretStr | None = None
    knowledge_chroma_url: str | None = Field(
        None, pattern=r"^https?://", description="http(s)://host:port of a Chroma server for knowledge vectors"
    )
    knowledge_chroma_token: SecretStr | None = Field(None, description="sent as `Authorization: Bearer` to Chroma")

    # --- serving -----------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str | None = Field(None, description="the address callers and carriers reach Parley at")
    cors_origins: list[str] = Field(default_factory=list)
    max_body_bytes: int = 1_000_000
    knowledge_max_upload_bytes: int = Field(
        20_000_000, ge=0, description="the largest knowledge document upload request (all its files together)"
    )
    campaign_max_upload_bytes: int = Field(
        50_000_000, ge=0, description="the largest campaign contacts upload (POST /v1/campaigns/{id}/contacts)"
    )
    worker_id: str = Field(
        default_factory=socket.gethostname,
        description="names this process in call records; at start-up it closes only its own unfinished calls",
    )

    # --- many workers (parley.calls.capacity, parley.calls.registry, parley.calls.drain) ------------------
    max_calls: int | None = Field(
        None,
        ge=0,
        description="live calls this worker takes; past it new calls get busy (default: cores × "
        "PARLEY_CALLS_PER_CORE; 0: no cap)",
    )
    calls_per_core: float = Field(100.0, gt=0, description="the default cap's calls per core (bench/load.py)")
    drain_secs: float = Field(
        30.0, ge=0, description="on SIGTERM, how long live calls may go on before they end as worker-drain"
    )
    registry_ttl_s: float = Field(
        10.0, ge=2, le=300, description="a worker whose heartbeat is older than this is lost: its calls end"
    )

    # --- telephony (each carrier's own settings: its settings model, parley/telephony/<carrier>.py) ---------
    sip_port: int = Field(5060, ge=0, le=65535, description="UDP port of the SIP endpoint; 0 turns it off")
    sip_host: str = Field("127.0.0.1", description="address the SIP endpoint binds")
    sip_advertised_host: str | None = Field(None, description="address put in Contact/SDP (default: sip_host)")
    sip_rtp_ports: str = Field("20000-20999", description="UDP port range for RTP media")
    sip_ack_timeout_s: float = Field(
        10.0, gt=0, le=32, description="a 200 OK not ACKed by then ends the call and frees its RTP port (RFC: 32)"
    )
    sip_max_unacked_per_source: int = Field(
        10, ge=0, description="INVITEs being answered and not yet ACKed per source address; beyond: 486 (0: no cap)"
    )
    sip_invites_per_s: float = Field(5.0, ge=0, description="new INVITEs a second per source address (0: no limit)")
    sip_invite_burst: int = Field(20, ge=1, description="INVITEs one source may send at once before the rate applies")
    sip_trunk_uri: str | None = Field(None, description="outbound calls: sip:trunk.example.com[:port]")
    sip_trunk_username: str | None = None
    sip_trunk_password: SecretStr | None = None
    telephony_tenant: str | None = Field(
        None, description="tenant whose agents carriers reach by name when a webhook names no tenant"
    )
    telephony_signature_ttl_s: float = Field(
        300, gt=0, le=3600, description="how long a signed stream answer, or a carrier webhook's signature, is valid"
    )
    telephony_rate_limit: str = Field(
        "3000/minute", description="carrier webhooks and stream handshakes per source address"
    )

    # --- embedded models -----------------------------------------------------------
    llm_concurrency: int | None = Field(
        None, ge=1, description="llama.cpp evaluations at once in this process (default: one per two cores)"
    )
    llm_schedule: Literal["token", "reply"] = Field(
        "token", description="calls waiting for the model take turns per token, or per whole reply"
    )

    # --- security ----------------------------------------------------------------
    jwt_secret: SecretStr | None = Field(None, description="HS256 secret for JWTs your identity system issues")
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    oidc_issuer: str | None = Field(None, description="RS256/ES256 JWTs checked against this issuer's JWKS")
    oidc_audience: str | None = None
    oidc_jwks_url: str | None = Field(None, description="default: discovered from the issuer")
    oidc_client_id: str | None = Field(
        None, description="the console's public client at the OIDC issuer: set, the console offers the issuer's login"
    )
    oidc_scopes: str = Field("openid profile email", description="the scopes the console's OIDC sign-in asks for")
    token_secret: SecretStr | None = Field(None, description="signs short-lived talk tokens; default: generated")
    rate_limit_per_key: str = "600/minute"
    rate_limit_per_address: str = "1200/minute"
    trusted_proxies: Annotated[list[str], NoDecode, BeforeValidator(_networks)] = Field(
        default_factory=list,
        description="IPs/CIDRs of reverse proxies whose X-Forwarded-For/-Proto are believed; empty: none",
    )
    jwt_max_lifetime_s: int = Field(86_400, ge=60, description="JWTs meant to live longer (exp - iat) are refused")
    outbound_allow: Annotated[list[str], NoDecode, BeforeValidator(_words), AfterValidator(_outbound)] = Field(
        default_factory=list,
        description="hosts (.domain for a whole domain) and IPs/CIDRs that tenant-set URLs may reach although not "
        "public (loopback, private, link-local, metadata); empty: public addresses only",
    )
    metrics_token: SecretStr | None = Field(
        None, description="bearer token Prometheus sends to GET /metrics; unset (and no metrics_allow): 404"
    )
    metrics_allow: Annotated[list[str], NoDecode, BeforeValidator(_networks)] = Field(
        default_factory=list, description="IPs/CIDRs that may scrape GET /metrics without the token"
    )
    metrics_enabled: bool = Field(True, description="false: no metrics are collected (to measure what they cost)")
    otel_endpoint: str | None = Field(
        None, description="OTLP/HTTP collector (http://host:4318) for call traces; needs the otel extra"
    )
    metrics_agent_labels: int = Field(
        20, ge=0, description="distinct agent names labelled in parley_calls_active; the rest are 'other'"
    )
    credentials_key: SecretStr | None = Field(
        None,
        description="Fernet key(s), comma-separated (the first encrypts), for tenants' provider credentials; "
        "default: generated once into data_dir/credentials.key. Every worker needs the same key",
    )
    provider_env_allow: Annotated[list[str], NoDecode, BeforeValidator(_words)] = Field(
        default_factory=list,
        description="environment variables a local document (parley call) may name in api_key_env; never PARLEY_*; "
        "parley serve never reads them",
    )

    _given: dict[str, Any] = PrivateAttr(default_factory=dict)  # values for no field here: for sections
    _sections: dict[type[BaseSettings], BaseSettings] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _keep_section_values(cls, data: Any, handler: ModelWrapValidatorHandler[Settings]) -> Settings:
        """``Settings(twilio_auth_token=…)`` still configures Twilio: what no field here takes is kept for sections
        (privately: never dumped, never logged)."""
        settings = handler(data)
        if isinstance(data, dict):
            settings._given = {k: v for k, v in data.items() if k not in cls.model_fields}
        return settings

    def section(self, model: type[S]) -> S:
        """``model`` (a plugin's own settings, e.g. a carrier's) from the same ``PARLEY_*`` environment and .env,
        with the values this object was given; made once per Settings object."""
        if model not in self._sections:
            self._sections[model] = model(**{k: v for k, v in self._given.items() if k in model.model_fields})
        section = self._sections[model]
        assert isinstance(section, model)
        return section

    @cached_property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'parley.db').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    @property
    def recordings_dir(self) -> Path:
        return self.data_dir / "recordings"
