"""The FastAPI application factory."""

from __future__ import annotations

import logging
import threading
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from elis import __version__, clock
from elis.api.auth import auth_mode, document_auth
from elis.api.batches import AdmissionResumer
from elis.api.batches import router as batch_router
from elis.api.deferred import DeferredPredictions
from elis.api.deps import AdmissionPredictor, Tokenizer
from elis.api.errors import BodySizeLimit, install_error_handlers
from elis.api.metrics import install_metrics
from elis.api.routes import router
from elis.config import Settings, get_settings
from elis.models_prepare import resolve_model
from elis.tasks.app import configure_celery
from elis.tasks.scheduling_setup import QualityMonitor, build_scheduler

log = logging.getLogger(__name__)


class StampReceipt:
    """Note when each request came in (`request.state.received_at`), before any dependency waits for a thread
    (the caller's key lookup is one): a job's JCT counts from here (`elis.api.admission.admit`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope.setdefault("state", {})["received_at"] = clock.now()
        await self.app(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    scheduler = build_scheduler(settings)
    monitor = QualityMonitor(scheduler, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if app.state.deferred_predictions.closed:  # a second start of the same app
            app.state.deferred_predictions = DeferredPredictions(app.state.predictor, settings.resolved_database_url)
        monitor.start()  # refreshes the quality guard and the aging bound from finished jobs
        resumer = AdmissionResumer(app.state, settings)  # batches whose admitting process stopped
        resumer.start()
        yield
        monitor.stopped.set()
        resumer.stopped.set()
        app.state.deferred_predictions.stop()

    app = FastAPI(title="elis", version=__version__, description="LLM batch inference scheduled by predicted length",
                  lifespan=lifespan)
    app.state.settings = settings
    app.state.scheduler = scheduler
    app.state.auth_mode = auth_mode(settings)
    app.state.predictor = AdmissionPredictor(settings.predictor_checkpoint or None, settings.predictor_threads)
    app.state.deferred_predictions = DeferredPredictions(app.state.predictor, settings.resolved_database_url)
    tokenizer_lock = threading.Lock()
    tokenizer_box: list[Tokenizer] = []

    def tokenizer() -> Tokenizer:
        with tokenizer_lock:
            if not tokenizer_box:
                tokenizer_box.append(Tokenizer(resolve_model(settings.model, settings.models_dir)))
            return tokenizer_box[0]

    app.state.tokenizer = tokenizer
    configure_celery(settings)

    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(StampReceipt)  # outermost: the receipt is taken before anything waits
    app.include_router(router)
    app.include_router(batch_router)
    install_metrics(app)
    document_auth(app, app.state.auth_mode)
    return app
