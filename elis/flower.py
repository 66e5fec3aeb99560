"""`elis flower`: Celery's Flower monitor for the workers, with basic authentication and RabbitMQ's
management API (for queue lengths).

Secrets go to Flower through its environment (FLOWER_BASIC_AUTH, FLOWER_BROKER_API), never on the command
line where `ps` would show them. There is no default password: Flower does not start without one.
"""

from __future__ import annotations

import os
import sys
from urllib.parse import quote, unquote, urlsplit

from elis.config import Settings

CELERY_APP = "elis.tasks.app:celery_app"


class FlowerConfigError(ValueError):
    """Flower cannot start with these settings (the message says which to set)."""


def broker_api_url(settings: Settings) -> str:
    """RabbitMQ's management API: ELIS_BROKER_API_URL, or the broker's host and credentials on port 15672."""
    if settings.broker_api_url:
        return settings.broker_api_url
    broker = urlsplit(settings.broker_url)
    credentials = ""
    if broker.username:
        credentials = f"{_encoded(broker.username)}:{_encoded(broker.password or '')}@"
    return f"http://{credentials}{broker.hostname or '127.0.0.1'}:15672/api/"


def flower_command(settings: Settings, port: int, address: str) -> tuple[list[str], dict[str, str]]:
    """The Flower command line and its environment."""
    user, password = settings.flower_user, settings.flower_password
    if not password:
        raise FlowerConfigError(
            "set ELIS_FLOWER_PASSWORD (and ELIS_FLOWER_USER, default 'admin'): Flower has no default password"
        )
    if ":" in user or "," in user or "," in password:
        raise FlowerConfigError("ELIS_FLOWER_USER must not contain ':' or ','; ELIS_FLOWER_PASSWORD not ','")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWER_")}  # Flower refuses unknown ones
    env.update(FLOWER_BASIC_AUTH=f"{user}:{password}", FLOWER_BROKER_API=broker_api_url(settings))
    args = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        CELERY_APP,
        "flower",
        f"--port={port}",
        f"--address={address}",
    ]
    return args, env


def _encoded(part: str) -> str:
    return quote(unquote(part), safe="")
