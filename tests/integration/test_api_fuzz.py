"""schemathesis over the served OpenAPI spec: valid and invalid requests of every operation against the real
PostgreSQL and RabbitMQ. No answer may be a 5xx or differ from the spec (status, headers, body schema)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from elis.api.app import create_app

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MIN_CASES = 1000
EXAMPLES_PER_OPERATION_AND_MODE = 130
# positive_data_acceptance is left out on purpose: a schema-valid prompt can still be refused in words (blank,
# or longer than the model's context with its max_tokens), which the spec cannot express.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, negative_data_rejection]


def run_cases(strategy, num_cases: dict[str, int], key: str, max_examples: int = EXAMPLES_PER_OPERATION_AND_MODE) -> None:
    @hypothesis_settings(max_examples=max_examples, deadline=None, database=None,
                         suppress_health_check=list(HealthCheck), derandomize=True)
    @given(case=strategy)
    def call(case) -> None:
        num_cases[key] += 1
        case.call_and_validate(checks=CHECKS)

    try:
        call()
    except Unsatisfiable:  # no invalid request exists for an operation without inputs (/healthz)
        assert num_cases[key] == 0, key


def test_the_served_spec_holds_for_at_least_a_thousand_generated_requests(settings):
    app = create_app(settings)
    app.state.tokenizer()  # loaded up front, as `elis serve` does: the first request must not time out
    app.state.predictor.get()
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    num_cases: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            key = f"{operation.method.upper()} {operation.path} {mode.value}"
            num_cases[key] = 0

            run_cases(operation.as_strategy(generation_mode=mode), num_cases, key)
    print("schemathesis cases per operation and mode:", num_cases, "total", sum(num_cases.values()))
    assert sum(num_cases.values()) >= MIN_CASES, num_cases


def test_the_spec_holds_with_api_keys_too(settings):
    from elis import clock
    from elis.storage.db import session_scope
    from elis.storage.keys import create_key

    keyed = settings.model_copy(update={"auth": "keys"})
    app = create_app(keyed)
    app.state.tokenizer()
    app.state.predictor.get()
    with session_scope(keyed.resolved_database_url) as session:
        key = create_key(session, tenant="fuzz", name="fuzz", is_admin=False, now=clock.now())[1]
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    num_cases: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            key_name = f"{operation.method.upper()} {operation.path} {mode.value}"
            num_cases[key_name] = 0
            strategy = operation.as_strategy(generation_mode=mode, headers={"Authorization": f"Bearer {key}"})
            run_cases(strategy, num_cases, key_name, max_examples=25)
    print("schemathesis cases with keys:", sum(num_cases.values()))
    assert sum(num_cases.values()) >= 150, num_cases
