"""The limits a running API admits jobs by, read from its /healthz, so that `elis replay` and `elis compare
--base-url` leave out what THAT API would refuse (its model's context, its max_tokens limit, its model's chat
template), not what this machine's ELIS_* settings would: a replay from a laptop against a served 8k-context
model must neither drop prompts the API takes nor send ones it refuses."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx

from elis.models_prepare import BUNDLED_MODEL_NAME


@dataclass(frozen=True)
class ApiLimits:
    """What /healthz says a running API admits: its model (as it names it) and its limits."""

    model: str
    max_model_len: int
    max_tokens_limit: int


def api_limits(*base_urls: str, timeout_s: float = 10.0) -> ApiLimits | None:
    """The strictest limits of the APIs at `base_urls` that answer /healthz (a 503 body still says them);
    None when none answers or none says (an older version): the caller then judges by its own settings, and a
    down API is reported where the replay first needs it."""
    found = []
    for url in base_urls:
        try:
            body = httpx.get(f"{url.rstrip('/')}/healthz", timeout=timeout_s).json()
            found.append(ApiLimits(str(body["model"]), int(body["max_model_len"]), int(body["max_tokens_limit"])))
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            continue
    if not found:
        return None
    return ApiLimits(model=found[0].model, max_model_len=min(f.max_model_len for f in found),
                     max_tokens_limit=min(f.max_tokens_limit for f in found))


def with_local(limits: ApiLimits, settings) -> ApiLimits:
    """The limits of a comparison that runs on given APIs AND on APIs started here (for the policies the given
    ones do not serve): the stricter of each, and this machine's model (its API surely has its tokenizer)."""
    return ApiLimits(model=settings.model or BUNDLED_MODEL_NAME,
                     max_model_len=min(limits.max_model_len, settings.max_model_len),
                     max_tokens_limit=min(limits.max_tokens_limit, settings.max_tokens_limit))


def local_model_of(api_model: str, local_setting: str) -> str | None:
    """The ELIS_MODEL value that loads the API's tokenizer on this machine: "" for the bundled model (prepared
    here on first need), the API's own value when this machine serves the same model or has that folder, and
    None when this machine has no copy (loading a hub id would download at run time)."""
    if api_model == BUNDLED_MODEL_NAME:
        return ""
    if api_model == local_setting or Path(api_model).is_dir():
        return api_model
    return None
