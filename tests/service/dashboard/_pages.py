"""Helpers for the dashboard tests: reading tokens out of pages."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

import httpx

Login = Callable[[httpx.AsyncClient, str], Awaitable[str]]
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_LOGIN_TOKEN = re.compile(r'name="login_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token a page's forms carry."""
    found = _CSRF.search(html)
    assert found is not None, "no CSRF field on the page"
    return found.group(1)


def login_token_of(html: str) -> str:
    found = _LOGIN_TOKEN.search(html)
    assert found is not None, "no login token on the login form"
    return found.group(1)
