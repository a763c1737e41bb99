"""What the dashboard pages share (web.py): the status filter of the list pages."""

from __future__ import annotations

import httpx
import pytest

from arbor.core.errors import InvalidRequestError
from arbor.service.dashboard.web import status_filter

Browser = tuple[httpx.AsyncClient, str]


def test_a_status_filter_is_empty_or_one_of_the_known_statuses() -> None:
    assert status_filter("", ("pending", "failed")) is None
    assert status_filter("failed", ("pending", "failed")) == "failed"
    with pytest.raises(InvalidRequestError, match="status: must be one of pending, failed"):
        status_filter("Failed", ("pending", "failed"))


@pytest.mark.parametrize("page", ["/runs", "/batches", "/agents", "/keys"])
async def test_every_list_page_refuses_an_unknown_status(admin_browser: Browser, page: str) -> None:
    client, _ = admin_browser
    answer = await client.get(f"{page}?status=bogus")
    assert answer.status_code == 422
    assert "status: must be one of" in answer.text
    assert (await client.get(page)).status_code == 200
