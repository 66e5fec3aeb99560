"""The service refuses to be reachable beyond localhost without keys or with a default secret."""

from __future__ import annotations

import pytest

from elis.api.auth import UnsafeExposure, auth_mode, check_exposure
from elis.config import Settings


def settings(**values) -> Settings:
    return Settings(**{"database_url": "postgresql+psycopg2://elis:s3cret@db/elis",
                       "broker_url": "amqp://elis:s3cret@mq:5672//", **values})


def test_auto_auth_is_none_on_loopback_and_keys_beyond_it():
    assert auth_mode(settings(api_host="127.0.0.1")) == "none"
    assert auth_mode(settings(api_host="::1")) == "none"
    assert auth_mode(settings(api_host="0.0.0.0")) == "keys"
    assert auth_mode(settings(api_host="127.0.0.1", auth="keys")) == "keys"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"api_host": "0.0.0.0", "auth": "none"}, "ELIS_AUTH=none while bound to 0.0.0.0"),
        ({"api_host": "0.0.0.0", "broker_url": "amqp://guest:guest@mq:5672//"}, "ELIS_BROKER_URL uses the default"),
        ({"api_host": "10.0.0.5", "database_url": "postgresql+psycopg2://elis:elis@db/elis"}, "ELIS_DATABASE_URL"),
    ],
)
def test_serving_beyond_localhost_without_keys_or_with_a_default_secret_is_refused(values, message):
    with pytest.raises(UnsafeExposure, match=message):
        check_exposure(settings(**values))


def test_local_use_and_a_keyed_deployment_with_own_secrets_start():
    check_exposure(settings(api_host="127.0.0.1", auth="none", broker_url="amqp://guest:guest@127.0.0.1//"))
    check_exposure(settings(api_host="0.0.0.0"))
