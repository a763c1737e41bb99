from __future__ import annotations

from collections.abc import Callable

import httpx

from arbor.service.context import ServiceContext

MakeHTTP = Callable[..., httpx.AsyncClient]

PUBLIC_FIELDS = {
    "id",
    "name",
    "prefix",
    "scopes",
    "status",
    "created_at",
    "expires_at",
    "revoked_at",
    "last_used_at",
    "rpm",
    "tpm",
    "budget_usd",
}


async def test_create_shows_the_key_once(http: httpx.AsyncClient, make_http: MakeHTTP) -> None:
    r = await http.post(
        "/v1/keys",
        json={"name": "ci", "scopes": ["read"], "rpm": 60, "tpm": 10000, "budget_usd": 5},
    )
    assert r.status_code == 201
    created = r.json()
    assert set(created) == PUBLIC_FIELDS | {"key"}
    assert created["key"].startswith(created["prefix"] + "_")
    assert created["status"] == "active" and created["scopes"] == ["read"]
    fetched = (await http.get(f"/v1/keys/{created['id']}")).json()
    assert set(fetched) == PUBLIC_FIELDS
    listed = (await http.get("/v1/keys")).text
    assert created["key"] not in listed and created["key"].split("_", 2)[2] not in listed
    assert "hash" not in listed
    reader = make_http(created["key"])
    assert (await reader.get("/metrics")).status_code == 200


async def test_list_is_newest_first_and_filters_by_status(http: httpx.AsyncClient) -> None:
    first = (await http.post("/v1/keys", json={"name": "one"})).json()
    second = (await http.post("/v1/keys", json={"name": "two"})).json()
    await http.delete(f"/v1/keys/{first['id']}")
    names = [k["name"] for k in (await http.get("/v1/keys")).json()]
    assert names == ["two", "one", "test-admin"]
    revoked = (await http.get("/v1/keys", params={"status": "revoked"})).json()
    assert [k["id"] for k in revoked] == [first["id"]]
    assert (await http.get("/v1/keys", params={"status": "bogus"})).status_code == 422
    assert second["status"] == "active"


async def test_update_sets_and_clears_fields(http: httpx.AsyncClient) -> None:
    key = (await http.post("/v1/keys", json={"name": "k", "rpm": 5, "expires_in": 60})).json()
    assert key["expires_at"] is not None
    r = await http.patch(f"/v1/keys/{key['id']}", json={"name": "renamed", "rpm": None, "tpm": 99})
    body = r.json()
    assert (body["name"], body["rpm"], body["tpm"]) == ("renamed", None, 99)
    body = (await http.patch(f"/v1/keys/{key['id']}", json={"expires_at": None})).json()
    assert body["expires_at"] is None and body["tpm"] == 99
    r = await http.patch(f"/v1/keys/{key['id']}", json={"scopes": None})
    assert r.status_code == 422
    r = await http.patch(f"/v1/keys/{key['id']}", json={"expires_at": "2030-01-01T00:00:00"})
    assert r.status_code == 422 and "timezone" in r.json()["detail"]


async def test_rotating_a_revoked_key_is_a_conflict_and_unknown_ids_404(
    http: httpx.AsyncClient,
) -> None:
    key = (await http.post("/v1/keys", json={})).json()
    assert key["scopes"] == ["run"]
    await http.post(f"/v1/keys/{key['id']}/revoke")
    r = await http.post(f"/v1/keys/{key['id']}/rotate")
    assert r.status_code == 409 and r.json()["type"] == "urn:arbor:problem:conflict"
    for method, path in [
        ("GET", "/v1/keys/key_nope"),
        ("PATCH", "/v1/keys/key_nope"),
        ("POST", "/v1/keys/key_nope/revoke"),
        ("POST", "/v1/keys/key_nope/rotate"),
        ("DELETE", "/v1/keys/key_nope"),
    ]:
        r = await http.request(method, path, json={} if method == "PATCH" else None)
        assert r.status_code == 404, (method, path)


async def test_create_validates_its_body(http: httpx.AsyncClient) -> None:
    bad = [
        {"scopes": []},
        {"scopes": ["superuser"]},
        {"expires_in": 0},
        {"expires_in": 10, "expires_at": "2030-01-01T00:00:00Z"},
        {"budget_usd": -1},
        {"name": "bad\nname"},
        {"api_key": "x"},
        # booleans and strings are not numbers (JSON Schema says so; lax coercion would not)
        {"rpm": True},
        {"tpm": "5"},
        {"budget_usd": True},
        {"expires_in": True},
    ]
    for body in bad:
        r = await http.post("/v1/keys", json=body)
        assert r.status_code == 422, body


async def test_last_used_is_recorded(
    http: httpx.AsyncClient, service_ctx: ServiceContext, admin_key: str
) -> None:
    keys = (await http.get("/v1/keys")).json()
    assert keys[0]["last_used_at"] is not None
