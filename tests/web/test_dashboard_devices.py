"""The dashboard's devices: a user sees their phones and revokes one (its key is refused at once, their other keys
work); someone else's phone cannot be revoked; the admin view shows device and server shares apart."""

from __future__ import annotations

from tests.web.test_dashboard_http import Site, signed_in, site  # noqa: F401  (the module's app fixture)


def register(site: Site, user: str) -> tuple[str, str]:  # noqa: F811
    response = site.client.post("/api/devices", json={"model": "Pixel 8", "os": "Android 15",
                                                       "capabilities": ["local-llm", "npu"]},
                                headers={"Authorization": f"Bearer {site.keys[user]}"})  # fmt: skip
    assert response.status_code == 201, response.text
    return response.json()["device"]["id"], response.json()["apiKey"]


def test_user_sees_and_revokes_their_device(site: Site) -> None:  # noqa: F811
    device_id, device_key = register(site, "alice")
    as_device = {"Authorization": f"Bearer {device_key}"}
    assert site.client.get("/api/sync", headers=as_device).status_code == 200
    csrf = signed_in(site, "bob")
    refused = site.client.post(f"/dashboard/devices/{device_id}/revoke", data={"csrf_token": csrf})
    assert refused.status_code == 404  # bob's dashboard cannot revoke alice's phone
    csrf = signed_in(site, "alice")
    page = site.client.get("/dashboard")
    assert f'data-device="{device_id}"' in page.text and "Pixel 8 (Android 15)" in page.text
    forged = site.client.post(f"/dashboard/devices/{device_id}/revoke", data={"csrf_token": "x" * 43})
    assert forged.status_code == 403
    assert site.client.get("/api/sync", headers=as_device).status_code == 200
    revoked = site.client.post(
        f"/dashboard/devices/{device_id}/revoke", data={"csrf_token": csrf}, follow_redirects=False
    )
    assert revoked.status_code == 303 and revoked.headers["location"] == "/dashboard?revoked=1#devices"
    assert site.client.get("/api/sync", headers=as_device).status_code == 401
    assert site.client.get("/api/sync", headers={"Authorization": f"Bearer {site.keys['alice']}"}).status_code == 200
    assert "revoked" in site.client.get("/dashboard").text.split(f'data-device="{device_id}"')[1].split("</tr>")[0]


def test_admin_sees_device_and_server_shares(site: Site) -> None:  # noqa: F811
    _, device_key = register(site, "bob")
    counts = {"day": "2099-01-01", "localGenerations": 30.4, "libraryAnswers": 2.2, "epsilon": 1.0}
    usage = {"clientId": "u-1", "kind": "usage", "data": counts}
    delivered = site.client.post(
        "/api/sync", json={"items": [usage]}, headers={"Authorization": f"Bearer {device_key}"}
    )
    assert delivered.json()["accepted"] == 1
    signed_in(site, "root")
    page = site.client.get("/dashboard/admin").text
    assert 'id="share-device">30<' in page and 'id="share-library">2<' in page
    assert 'id="share-server-local">' in page and 'id="share-local">' in page
