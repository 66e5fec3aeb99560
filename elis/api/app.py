"""The FastAPI application factory."""

from __future__ import annotations

import logging
import threading
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from elis import __version__
from elis.api.batches import router as batch_router
from elis.api.deps import AdmissionPredictor, Tokenizer
from elis.api.metrics import install_metrics
from elis.api.routes import router
from elis.config import Settings, get_settings
from elis.models_prepare import resolve_model
from elis.tasks.app import configure_celery
from elis.tasks.scheduling_setup import QualityMonitor, build_scheduler

log = logging.getLogger(__name__)


def _readable(error: dict) -> str:
    if error.get("type") == "json_invalid":
        return "the request body is not valid JSON"
    where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
    message = error.get("msg", "invalid value").removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    scheduler = build_scheduler(settings)
    monitor = QualityMonitor(scheduler, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        monitor.start()  # refreshes the quality guard and the aging bound from finished jobs
        yield
        monitor.stopped.set()

    app = FastAPI(title="elis", version=__version__, description="LLM batch inference scheduled by predicted length",
                  lifespan=lifespan)
    app.state.settings = settings
    app.state.scheduler = scheduler
    app.state.predictor = AdmissionPredictor(settings.predictor_checkpoint or None, settings.predictor_threads)
    tokenizer_lock = threading.Lock()
    tokenizer_box: list[Tokenizer] = []

    def tokenizer() -> Tokenizer:
        with tokenizer_lock:
            if not tokenizer_box:
                tokenizer_box.append(Tokenizer(resolve_model(settings.model, settings.models_dir)))
            return tokenizer_box[0]

    app.state.tokenizer = tokenizer
    configure_celery(settings)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [_readable(e) for e in exc.errors()]
        return JSONResponse(status_code=422, content={"detail": "; ".join(problems), "errors": problems})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(status_code=500, content={"detail": f"internal error: {type(exc).__name__}"})

    app.include_router(router)
    app.include_router(batch_router)
    install_metrics(app)
    return app
