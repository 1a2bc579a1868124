"""Schemathesis against the web lab's OpenAPI schema (bounded: 40 examples per operation).

Every generated request (names from the schema's enums, so runs reach the engine) must get an
answer that the schema documents: status, content type and body (``ErrorResponse`` for every
4xx, ``RunResponse`` / ``MetaResponse`` / ``LandscapeGrid`` for 200), and never a 5xx (all of
schemathesis's checks but one, excluded below with its reason). The last
test checks that the fuzzing reached the engine (some runs answered 200).
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402

from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402

from optimlab.web import create_app  # noqa: E402

app = create_app()
schema = schemathesis.openapi.from_asgi("/api/openapi.json", app)
STATUSES: dict[str, list[int]] = {}


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_answer_is_what_the_schema_documents(case):
    response = case.call()
    STATUSES.setdefault(case.operation.path, []).append(response.status_code)
    assert response.status_code < 500, response.text
    # a schema-valid run may still be refused with a 422 that names why: its start outside that
    # landscape's window, more work than this server's Limits, a warm-up longer than the run:
    # constraints between fields and server settings that JSON Schema does not express
    case.validate_response(response, excluded_checks=[positive_data_acceptance])


def test_the_fuzzing_reached_the_engine():
    runs = STATUSES.get("/api/run", [])
    assert runs, "the run operation was not fuzzed"
    assert 200 in runs, {s: runs.count(s) for s in set(runs)}
