"""docs/openapi.json is the API's published contract: generated from the handler, never edited by hand."""

from __future__ import annotations

import json

from tests.api.generate_openapi import DOCUMENT, render

REGENERATE = ".venv/bin/python -m tests.api.generate_openapi"


def test_committed_document_matches_the_handler() -> None:
    assert DOCUMENT.exists(), f"docs/openapi.json is missing; generate it with `{REGENERATE}`"
    assert DOCUMENT.read_text() == render(), (
        f"docs/openapi.json is out of date with sessions.handlers.api; regenerate it with `{REGENERATE}`"
        " and commit the result"
    )


def test_document_describes_every_route_and_the_bearer_token() -> None:
    document = json.loads(render())

    operations = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    assert operations == {
        ("POST", "/sessions"),
        ("GET", "/sessions"),
        ("GET", "/sessions/{session_id}"),
        ("POST", "/sessions/{session_id}/activity"),
        ("DELETE", "/sessions/{session_id}"),
        ("POST", "/sessions/{session_id}/connect"),
    }
    assert document["components"]["securitySchemes"]["CognitoIdToken"]["scheme"] == "bearer"
    assert document["security"] == [{"CognitoIdToken": []}]
    for path, item in document["paths"].items():
        for method, operation in item.items():
            successes = [code for code in operation["responses"] if code.startswith("2")]
            assert successes, f"{method.upper()} {path} documents no success response"
            error = operation["responses"]["404"]["content"]["application/json"]["schema"]
            assert error == {"$ref": "#/components/schemas/ErrorBody"}
