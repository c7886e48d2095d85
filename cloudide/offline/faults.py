"""Make AWS API calls in this process fail the way a throttled or unavailable service answers.

The fault-matrix tests and the reliability benchmark use it for throttling storms (ECS StopTask,
DynamoDB) and outages (S3 during a final flush). It sits in front of moto's in-process interception
(`mock_aws`), so it reaches every client in the process: the tests', the Lambda handlers' and the Step
Functions interpreter's. A call that hits a fault never reaches moto; the SDK sees an error response and
retries it like any other, so a storm of N faults exhausts the SDK's retries when N exceeds them.
It cannot reach a `ThreadedMotoServer`'s clients in other processes.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from botocore.awsrequest import AWSResponse, HTTPHeaders


@dataclass
class Fault:
    """Fail the next `times` calls of `service`'s `operation` (every operation when None)."""

    service: str  # as botocore names it in events: "dynamodb", "ecs", "s3", "stepfunctions"
    operation: str | None
    code: str
    status: int
    times: int | None  # None: until removed
    hits: int = 0

    def matches(self, service: str, operation: str) -> bool:
        return self.service == service and self.operation in (None, operation)


class _Body:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, *_: Any, **__: Any) -> Iterator[bytes]:
        yield self._body


def _response(request: Any, service: str, fault: Fault) -> AWSResponse:
    message = f"{fault.code} (injected by cloudide.offline.faults)"
    headers = HTTPHeaders()
    if service == "s3":  # REST-XML
        body = f"<Error><Code>{fault.code}</Code><Message>{message}</Message></Error>".encode()
        headers["Content-Type"] = "application/xml"
    else:  # the JSON protocols: the error code in `__type` and in the header REST-JSON services read
        body = json.dumps({"__type": fault.code, "message": message}).encode()
        headers["Content-Type"] = "application/x-amz-json-1.1"
        headers["x-amzn-ErrorType"] = fault.code
    return AWSResponse(request.url, fault.status, headers, _Body(body))


class AwsFaults:
    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def inject(
        self,
        service: str,
        operation: str | None = None,
        *,
        code: str = "ThrottlingException",
        status: int = 400,
        times: int | None = 1,
    ) -> Fault:
        fault = Fault(service, operation, code, status, times)
        with self._lock:
            self._faults.append(fault)
        return fault

    def remove(self, fault: Fault) -> None:
        with self._lock:
            if fault in self._faults:
                self._faults.remove(fault)

    @contextmanager
    def outage(self, service: str, *, code: str = "ServiceUnavailable", status: int = 503) -> Iterator[Fault]:
        """Every call to `service` fails while the block runs."""
        fault = self.inject(service, code=code, status=status, times=None)
        try:
            yield fault
        finally:
            self.remove(fault)

    @contextmanager
    def scoped(self) -> Iterator[AwsFaults]:
        """Faults injected inside the block end with it, so none outlives the test that set it."""
        with self._lock:
            saved = list(self._faults)
        try:
            yield self
        finally:
            with self._lock:
                self._faults[:] = saved

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def answer(self, event_name: str, request: Any) -> AWSResponse | None:
        """The fault's response for this call, or None to let it through (`before-send.<service>.<Op>`)."""
        _, _, rest = event_name.partition(".")
        service, _, operation = rest.partition(".")
        with self._lock:
            fault = next((f for f in self._faults if f.matches(service, operation)), None)
            if fault is None:
                return None
            fault.hits += 1
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
        return _response(request, service, fault)


FAULTS = AwsFaults()
_install_lock = threading.Lock()


def install() -> AwsFaults:
    """Put FAULTS in front of moto's in-process interception (once per process)."""
    from moto.core.botocore_stubber import BotocoreStubber

    with _install_lock:
        if not getattr(BotocoreStubber, "_cloudide_faults", False):
            original = BotocoreStubber.__call__

            def __call__(self: Any, event_name: str, request: Any, **kwargs: Any) -> AWSResponse | None:
                if self.enabled and (injected := FAULTS.answer(event_name, request)) is not None:
                    return injected
                return original(self, event_name, request, **kwargs)

            BotocoreStubber.__call__ = __call__  # type: ignore[method-assign]
            BotocoreStubber._cloudide_faults = True  # type: ignore[attr-defined]
    return FAULTS
