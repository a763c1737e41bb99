from __future__ import annotations

import arbor.core.errors as errors
from arbor.core.errors import ArborError, ProviderHTTPError, RateLimitedError


def test_every_error_derives_from_base_and_is_drawn_in_docstring() -> None:
    doc = errors.__doc__ or ""
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, ArborError)
        assert name in doc, f"{name} missing from the hierarchy drawing"


def test_http_errors_know_if_retriable() -> None:
    assert ProviderHTTPError("x", status_code=503).retriable
    assert RateLimitedError("x", status_code=429, retry_after=1.5).retriable
    for status in (400, 401, 403, 404, 422):
        assert not ProviderHTTPError("x", status_code=status).retriable
