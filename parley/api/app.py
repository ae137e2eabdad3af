"""The Parley HTTP service: FastAPI app, its lifespan and error handling."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import APIRouter, FastAPI, Header, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from parley import __version__
from parley.api.routers import resource_routers
from parley.api.security import add_security
from parley.api.state import AppState
from parley.calls.workers import join as join_workers
from parley.calls.workers import leave as leave_workers
from parley.config import Settings
from parley.logs import ensure_logging
from parley.metrics import (
    HttpMetricsMiddleware,
    configure,
    exposition,
    scrape_refusal,
    start_loop_monitor,
    stop_loop_monitor,
)
from parley.metrics.http import BUILD
from parley.net.clients import close_clients
from parley.redact import register_settings_secrets
from parley.telephony.carrier import carriers
from parley.tracing import start_tracing, stop_tracing
from parley.web import mount_console

log = structlog.get_logger(__name__)


def telephony_routers() -> list[APIRouter]:
    """Carrier webhooks and media streams (/telephony/<carrier>/…): every registered carrier's router."""
    return [carrier.router for carrier in carriers.all()]


async def start_sip(settings: Settings, state: AppState) -> Any:
    """The SIP endpoint (PARLEY_SIP_PORT; 0 turns it off). A taken port is logged, not fatal: the API still serves."""
    if not settings.sip_port:
        return None
    from parley.sip.agent.endpoint import SipEndpoint

    sip = SipEndpoint(settings, state.db, state.blobs)
    try:
        await sip.start()
    except OSError as exc:
        log.error("sip_unavailable", host=settings.sip_host, port=settings.sip_port, error=str(exc))
        return None
    return sip


def start_webhooks(settings: Settings, state: AppState) -> Any:
    """The webhook delivery worker: sends the database outbox's events (parley.webhooks.worker)."""
    from parley.store.credentials import cipher_for
    from parley.webhooks.worker import WebhookWorker

    return WebhookWorker(state.db, lambda: cipher_for(settings)).start()


def start_campaigns(settings: Settings, app: FastAPI) -> Any:
    """The campaign scheduler (parley.campaigns.scheduler): dials running campaigns' due contacts; None when
    PARLEY_CAMPAIGNS_ENABLED is false. A draining worker's scheduler claims nothing more."""
    from parley.campaigns.scheduler import CampaignScheduler
    from parley.campaigns.settings import CampaignSettings

    section = settings.section(CampaignSettings)
    if not section.campaigns_enabled:
        return None
    db = app.state.parley.db
    return CampaignScheduler(db, app=app, settings=section, worker_id=settings.worker_id,
                             base_url=settings.public_url).start()  # fmt: skip


async def resume_analyses(settings: Settings, state: AppState) -> None:
    """The post-call analyses this worker owed when it stopped (parley.calls.analysis_resume)."""
    from parley.calls.analysis_resume import resume_pending

    try:
        await resume_pending(state.db, settings.worker_id)
    except Exception:
        log.exception("analyses_not_resumed")


def start_ingestor(state: AppState) -> None:
    """The knowledge ingestion worker: parses and embeds queued documents (parley.knowledge.ingest)."""
    from parley.knowledge.ingest import Ingestor

    if state.knowledge is not None:
        state.ingestor = Ingestor(state.knowledge).start()


def add_metrics(app: FastAPI, settings: Settings) -> None:
    """``GET /metrics`` (parley.metrics) and the HTTP middleware that counts requests by route template."""
    configure(enabled=settings.metrics_enabled, agent_labels=settings.metrics_agent_labels)
    BUILD.labels(__version__).set(1)
    if settings.metrics_enabled:
        app.add_middleware(HttpMetricsMiddleware)  # outermost: every request, by route template and status

    @app.get("/metrics", tags=["health"])
    async def metrics(request: Request, authorization: str | None = Header(None)) -> Response:
        """Prometheus' scrape: from an address in PARLEY_METRICS_ALLOW, or with PARLEY_METRICS_TOKEN (no tenant
        data: labels are transports, stages, providers, route templates)."""
        client = request.client.host if request.client else None
        refused = scrape_refusal(settings.metrics_token, settings.metrics_allow, client, authorization)
        if refused is not None:
            headers = {"WWW-Authenticate": "Bearer"} if refused == 401 else None
            return Response(status_code=refused, headers=headers)
        return Response(exposition(), media_type=CONTENT_TYPE_LATEST)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    ensure_logging()  # `parley serve` has set it up already; any other server gets it here
    register_settings_secrets(settings)  # their values are masked in every log line
    for carrier in carriers.all():
        register_settings_secrets(carrier.settings(settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.parley = await AppState.open(settings)  # what api.deps.State and telephony.state.State read
        app.state.worker = await join_workers(settings, app.state.parley.db, app.state.parley.blobs)
        app.state.sip = await start_sip(settings, app.state.parley)
        app.state.webhooks = start_webhooks(settings, app.state.parley)
        app.state.campaigns = start_campaigns(settings, app)
        start_ingestor(app.state.parley)
        await resume_analyses(settings, app.state.parley)
        log.info("parley_started", database=settings.effective_database_url.split("@")[-1])
        loop_lag = start_loop_monitor() if settings.metrics_enabled else None
        start_tracing(settings.worker_id, settings.otel_endpoint)
        try:
            yield
        finally:
            await stop_loop_monitor(loop_lag)
            if app.state.campaigns is not None:
                await app.state.campaigns.stop()  # no new dials; the attempts it made are in the database
            await leave_workers(app.state.worker)  # live calls ended and written, then out of the registry
            if app.state.sip is not None:
                await app.state.sip.stop()
            await app.state.webhooks.stop()  # attempts under way stay queued for the next start
            if app.state.parley.ingestor is not None:
                await app.state.parley.ingestor.stop()  # a document under way goes back to the queue
            await app.state.parley.aclose()
            await close_clients()  # the carriers' and the identity provider's HTTP clients
            await stop_tracing()  # the last calls' spans exported

    app = FastAPI(
        title="Parley",
        version=__version__,
        description="Self-hosted voice agents: agents, calls, transcripts, recordings, and live talk.",
        lifespan=lifespan,
    )
    add_security(app, settings)
    add_metrics(app, settings)
    for router in resource_routers():  # /v1/<resource>: every module of api/routers
        app.include_router(router)
    for router in telephony_routers():
        app.include_router(router)

    @app.get("/health", tags=["health"])
    async def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    mount_console(app)  # the web console at / and /console/ (last: its mount catches the /console prefix)
    # unhandled exceptions: parley.api.errors.UnhandledErrorMiddleware (inside the security headers)
    return app
