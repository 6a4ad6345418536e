"""Per-customer embedding: guest tokens filtered to one billing account, and the embedding SDK.

A Flask blueprint that superset_config.py registers inside Superset's own process, so it needs no
server of its own and mints tokens with Superset's signing key:

* ``POST /metrics-platform/api/guest-token`` with ``Authorization: Bearer <embed API key>`` and
  ``{"dashboard": "<slug>", "account_id": "<id>"}``: what a customer portal's backend calls. The
  answer holds a guest token for that dashboard only, whose row-level-security clause
  ``account_id = '<id>'`` Superset adds to every query of every chart (a dataset without an
  ``account_id`` column then fails instead of showing all accounts).
* ``GET /metrics-platform/embedded-sdk.js``: the browser bundle of ``@superset-ui/embedded-sdk``
  (installed from npm), for pages that embed dashboards without a CDN.

metrics_platform/bi/portal.py is a small customer portal that uses both, as a real one would.
"""

from __future__ import annotations

import hmac
import os
import re
from pathlib import Path

from flask import Blueprint, Response, abort, current_app, jsonify, request

# What a tenant filter must look like; the validator hook in superset_config.py checks every guest
# token against it, so no token can be minted without one account's filter.
ACCOUNT_ID = r"[A-Za-z0-9_.:@-]{1,128}"
TENANT_CLAUSE = rf"account_id = '{ACCOUNT_ID}'"

blueprint = Blueprint("metrics_platform_embed", __name__, url_prefix="/metrics-platform")


def _embed_api_key() -> str:
    path = Path(os.environ["METRICS_PLATFORM_SUPERSET_SECRETS_DIR"]) / "superset_embed_api_key"
    return path.read_text().strip()


def _embedded_uuid(slug: str) -> str:
    """The embedding id of the dashboard with this slug; 404 unless it was made embeddable."""
    from superset import db
    from superset.models.dashboard import Dashboard

    dashboard = db.session.query(Dashboard).filter_by(slug=slug).one_or_none()
    if dashboard is None or not dashboard.embedded:
        abort(404, description=f"no embeddable dashboard with slug {slug!r}")
    return str(dashboard.embedded[0].uuid)


def mint(slug: str, account_id: str) -> dict[str, object]:
    """A guest token for one dashboard, every query filtered to ``account_id``."""
    from superset import security_manager

    if not re.fullmatch(ACCOUNT_ID, account_id or ""):
        abort(400, description=f"account_id must match {ACCOUNT_ID}")
    embedded_uuid = _embedded_uuid(slug)
    body = {
        "user": {"username": f"account:{account_id}", "first_name": "Account", "last_name": account_id},
        "resources": [{"type": "dashboard", "id": embedded_uuid}],
        "rls": [{"clause": f"account_id = '{account_id}'"}],
    }
    hook = current_app.config.get("GUEST_TOKEN_VALIDATOR_HOOK")
    if hook is not None and not hook(body):
        abort(400, description="guest token refused by GUEST_TOKEN_VALIDATOR_HOOK")
    token = security_manager.create_guest_access_token(body["user"], body["resources"], body["rls"])
    return {
        "token": token.decode() if isinstance(token, bytes) else token,
        "embedded_id": embedded_uuid,
        "expires_in": current_app.config["GUEST_TOKEN_JWT_EXP_SECONDS"],
    }


@blueprint.route("/api/guest-token", methods=["POST"])
def guest_token() -> Response:
    """For a portal's backend: bearer key in, guest token for one account out."""
    supplied = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not supplied or not hmac.compare_digest(supplied, _embed_api_key()):
        abort(401, description="missing or wrong bearer key (secrets/superset_embed_api_key)")
    payload = request.get_json(silent=True) or {}
    return jsonify(mint(str(payload.get("dashboard", "")), str(payload.get("account_id", ""))))


@blueprint.route("/embedded-sdk.js")
def sdk() -> Response:
    """The browser bundle of @superset-ui/embedded-sdk, installed from npm by stack/superset.py."""
    path = Path(os.environ.get("METRICS_PLATFORM_SUPERSET_EMBED_SDK", ""))
    if not path.is_file():
        abort(404, description="the embedded SDK is not installed (npm missing when the stack started?)")
    return Response(path.read_bytes(), mimetype="text/javascript")
