"""Writes docs/openapi.json from the API's own routes and models: `python -m tests.api.generate_openapi`.

The document is generated, never edited: tests/api/test_openapi.py fails when the committed file and a
fresh generation differ, so the published contract cannot drift from the handler.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
TITLE = "CloudIDE Terminals API"
DESCRIPTION = (
    "Per-user terminal sessions, each an isolated ECS Fargate task reached through ECS Exec. Start a "
    "session, poll it until READY, connect for a terminal stream, report activity while in use, delete it "
    "when done. Every call carries the caller's Cognito user pool ID token; a caller only ever sees their "
    "own sessions (anyone else's answer 404, exactly like a missing one)."
)


def render() -> str:
    from sessions.handlers.api import resolver

    schema = resolver("*").get_openapi_json_schema(
        title=TITLE,
        version="1.0.0",
        description=DESCRIPTION,
        security_schemes={
            "CognitoIdToken": HTTPBearer(
                bearerFormat="JWT", description="The Cognito user pool ID token of the signed-in user"
            )
        },
        security=[{"CognitoIdToken": []}],
    )
    return json.dumps(json.loads(schema), indent=2, sort_keys=True) + "\n"


def main() -> int:
    DOCUMENT.parent.mkdir(parents=True, exist_ok=True)
    DOCUMENT.write_text(render())
    print(f"wrote {DOCUMENT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
