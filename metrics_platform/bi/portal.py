"""A demo customer portal: one account's dashboard embedded with @superset-ui/embedded-sdk.

It does what a real portal does, on another origin than Superset: its backend asks Superset's
guest-token endpoint (deploy/superset/embed_api.py) for a token filtered to the account, with the
embed API key that never reaches the browser; its page loads the SDK and embeds the dashboard.
Unlike a real portal it takes the account from the URL (``/?account_id=acme``) instead of from a
logged-in customer, so it listens on loopback only. Run it with ``metrics-platform dashboards portal``.
"""

from __future__ import annotations

import html
import json
import re
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import requests

from metrics_platform.settings import Settings
from metrics_platform.stack import superset

DEFAULT_DASHBOARD = "account-usage"
_ACCOUNT_ID = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
  body {{ margin: 0; font-family: sans-serif; }}
  header {{ padding: 10px 16px; background: #20323f; color: white; }}
  #dashboard, #dashboard iframe {{ width: 100%; height: calc(100vh - 40px); border: 0; }}
</style></head>
<body>
<header>Customer portal (demo) &middot; account <b id="account">{account}</b></header>
<div id="dashboard"></div>
<script src="{superset}/metrics-platform/embedded-sdk.js"></script>
<script>
  supersetEmbeddedSdk.embedDashboard({{
    id: {embedded_id},
    supersetDomain: {superset_json},
    mountPoint: document.getElementById("dashboard"),
    // The SDK asks again before the token expires; the portal's backend mints a fresh one.
    fetchGuestToken: () => fetch({token_url}).then((r) => r.json()).then((body) => body.token),
    dashboardUiConfig: {{ hideTitle: false, filters: {{ expanded: false }} }},
  }});
</script>
</body></html>
"""


def guest_token(settings: Settings, dashboard: str, account_id: str) -> dict[str, object]:
    """Ask Superset for a guest token of ``dashboard`` filtered to ``account_id`` (server side)."""
    response = requests.post(
        f"{settings.superset.url}/metrics-platform/api/guest-token",
        json={"dashboard": dashboard, "account_id": account_id},
        headers={"Authorization": f"Bearer {superset.embed_api_key(settings)}"},
        timeout=30,
    )
    if response.status_code != 200:
        raise RuntimeError(f"guest token for {account_id!r} on {dashboard!r}: {response.status_code} {response.text}")
    return response.json()


def _handler(settings: Settings) -> type[BaseHTTPRequestHandler]:
    class Portal(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
            pass

        def _send(self, status: int, body: str, content_type: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            url = urlparse(self.path)
            if url.path not in ("/", "/guest-token"):
                self._send(404, "not found\n", "text/plain")
                return
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            account = query.get("account_id", "")
            dashboard = query.get("dashboard", DEFAULT_DASHBOARD)
            if not _ACCOUNT_ID.fullmatch(account):
                self._send(400, "give ?account_id=<billing account id>\n", "text/plain")
                return
            try:
                token = guest_token(settings, dashboard, account)
            except (RuntimeError, requests.RequestException) as exc:
                self._send(502, f"{exc}\n", "text/plain")
                return
            if url.path == "/guest-token":
                self._send(200, json.dumps({"token": token["token"]}), "application/json")
            else:
                token_url = f"/guest-token?dashboard={dashboard}&account_id={account}"
                page = _PAGE.format(
                    title=html.escape(f"{dashboard} for {account}"),
                    account=html.escape(account),
                    superset=html.escape(settings.superset.url),
                    superset_json=json.dumps(settings.superset.url),
                    embedded_id=json.dumps(token["embedded_id"]),
                    token_url=json.dumps(token_url),
                )
                self._send(200, page, "text/html; charset=utf-8")

    return Portal


def server(settings: Settings, port: int | None = None) -> ThreadingHTTPServer:
    """The portal bound to 127.0.0.1 (``serve_forever`` runs it); port defaults to the settings'."""
    address = ("127.0.0.1", settings.superset.portal_port if port is None else port)
    return ThreadingHTTPServer(address, _handler(settings))
