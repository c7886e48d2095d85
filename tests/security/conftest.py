"""The security suites reuse the API tests' in-process deployment (template resources in moto) and the
image tests' moto server (for what must travel over HTTP: presigned STS URLs, SigV4-checked S3)."""

from tests.api.conftest import call_api, deployment
from tests.image.conftest import moto_endpoint

__all__ = ["call_api", "deployment", "moto_endpoint"]
