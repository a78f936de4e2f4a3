"""receiver/openapi.yaml: valid OpenAPI 3.1, in step with both listeners, served on the admin one."""

from __future__ import annotations

import pytest
from openapi_spec_validator import validate

from receiver.openapi import document
from tests.api.served import NOT_YET_SERVED, described, served


def test_the_document_is_valid_openapi_3_1() -> None:
    spec = document()

    validate(spec)  # raises on any violation of the OpenAPI 3.1 schema

    assert spec["openapi"].startswith("3.1.")


@pytest.mark.parametrize("listener", ["public", "admin"])
def test_every_route_of_a_listener_is_described_with_its_tag(listener: str) -> None:
    assert served(listener) - described(listener) == set()


@pytest.mark.parametrize("listener", ["public", "admin"])
def test_every_described_operation_is_served_on_its_listener(listener: str) -> None:
    assert described(listener) - served(listener) - NOT_YET_SERVED == set()


def test_every_operation_answers_4xx_and_5xx_with_the_json_error_body() -> None:
    for path, item in document()["paths"].items():
        for method, operation in item.items():
            if not isinstance(operation, dict):
                continue
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    assert response["$ref"] in (
                        "#/components/responses/Error",
                        "#/components/responses/Unavailable",
                    ), (method, path, status)


def test_the_contract_endpoints_are_all_described() -> None:
    contract = {
        ("POST", "/webhooks/kallglot"),
        ("POST", "/events/call-ended"),
        ("POST", "/events/twilio"),
        ("POST", "/events/telnyx"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("GET", "/admin/calls"),
        ("GET", "/admin/calls/{session_id}"),
        ("POST", "/admin/replay"),
        ("GET", "/admin/dead-letters"),
        ("POST", "/admin/dead-letters/replay"),
        ("GET", "/admin/console"),
    }

    assert contract <= described("public") | described("admin")
