"""The list pages' table macro (templates/_table.html): header, caller-rendered rows, an empty
state spanning every column, htmx polling of the table alone, the next-page link."""

from __future__ import annotations

import re
from typing import Any

from arbor.service.dashboard.web import template_environment

_PAGE = """{% from "_table.html" import table %}
{% call(n) table("things", columns, rows, empty, **options) %}
<tr data-n="{{ n }}"><td>{{ n }}</td></tr>
{% endcall %}"""


def _render(rows: list[int], **options: Any) -> str:
    columns = ["Name", ("Cost", "num"), ""]
    page = template_environment().from_string(_PAGE)
    return page.render(columns=columns, rows=rows, empty="No <things>.", options=options)


def test_the_header_and_the_empty_state_span_every_column() -> None:
    html = _render([])
    assert '<thead><tr><th>Name</th><th class="num">Cost</th><th></th></tr></thead>' in html
    assert '<tr><td colspan="3" class="empty">No &lt;things&gt;.</td></tr>' in html
    assert '<table id="things">' in html


def test_the_caller_renders_each_row_and_the_empty_state_goes() -> None:
    html = _render([1, 2])
    assert re.findall(r'<tr data-n="(\d)">', html) == ["1", "2"]
    assert 'class="empty"' not in html


def test_a_polled_table_fetches_its_url_and_swaps_only_itself() -> None:
    html = _render([], refresh="/things?status=a&cursor=b", every="2s")
    wrapper = (
        '<div class="table-wrap" id="things-table" hx-get="/things?status=a&amp;cursor=b"'
        ' hx-trigger="every 2s" hx-select="#things-table" hx-swap="outerHTML">'
    )
    assert wrapper in html
    assert "every 5s" in _render([], refresh="/things")  # the default period
    still = _render([])
    assert '<div class="table-wrap">' in still
    assert "hx-" not in still


def test_the_next_page_link_follows_the_table_when_there_is_one() -> None:
    html = _render([1], more=("/things?cursor=a&b", "Older things →"))
    link = '<a class="button secondary" href="/things?cursor=a&amp;b">Older things →</a>'
    assert html.index("</table>") < html.index(link)
    assert "<a " not in _render([1])
