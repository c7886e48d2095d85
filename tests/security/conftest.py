"""The security suites reuse the API tests' in-process deployment (template resources in moto)."""

from tests.api.conftest import call_api, deployment

__all__ = ["call_api", "deployment"]
