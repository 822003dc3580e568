"""The platform as `make run` deploys it: daphne serving the API docs and admin with assets."""

from __future__ import annotations

import re


def test_api_docs_and_their_assets_load_without_a_cdn(live_platform):
    page = live_platform.client.get("/api/docs/")
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
    assert any(a.endswith(".js") for a in assets), assets
    for asset in assets:
        assert live_platform.client.get(asset).status_code == 200, asset


def test_admin_login_page_is_styled(live_platform):
    page = live_platform.client.get("/admin/login/")
    assert page.status_code == 200
    css = re.findall(r'href="(/static/admin/css/[^"]+)"', page.text)
    assert css and all(live_platform.client.get(c).status_code == 200 for c in css)


def test_healthz_reports_database_and_driver(live_platform):
    reply = live_platform.client.get("/healthz")
    assert reply.status_code == 200
    assert reply.json()["ok"] is True
