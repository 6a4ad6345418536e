"""Superset's configuration for the platform (loaded through SUPERSET_CONFIG_PATH).

metrics_platform/stack/superset.py starts Superset with the environment this file reads:
SUPERSET_HOME (data directory), METRICS_PLATFORM_SUPERSET_SECRETS_DIR (secrets generated once, mode
0600), METRICS_PLATFORM_SUPERSET_DATABASE_URI (metadata database; SQLite under SUPERSET_HOME when
empty), METRICS_PLATFORM_SUPERSET_EMBED_ORIGINS and METRICS_PLATFORM_SUPERSET_EMBED_SDK. This file
runs inside Superset's own virtualenv, so it cannot import metrics_platform.
"""

import os
import re
import sys
from pathlib import Path

# The embedding endpoints live next to this file (deploy/superset/embed_api.py).
sys.path.insert(0, str(Path(__file__).resolve().parent))

from embed_api import TENANT_CLAUSE, blueprint  # noqa: E402


def _secret(name: str) -> str:
    directory = os.environ.get("METRICS_PLATFORM_SUPERSET_SECRETS_DIR", "")
    path = Path(directory) / name
    try:
        value = path.read_text().strip()
    except OSError as exc:
        raise RuntimeError(f"Superset secret {path} is missing (metrics-platform up generates it): {exc}") from exc
    if not value:
        raise RuntimeError(f"Superset secret {path} is empty")
    return value


DATA_DIR = os.environ["SUPERSET_HOME"]
SECRET_KEY = _secret("superset_secret_key")
SQLALCHEMY_DATABASE_URI = os.environ.get("METRICS_PLATFORM_SUPERSET_DATABASE_URI") or (
    f"sqlite:///{DATA_DIR}/superset.db?check_same_thread=false"
)
# Postgres for production, e.g. METRICS_PLATFORM_SUPERSET_DATABASE_URI=
#   postgresql+psycopg2://superset:...@db:5432/superset  (then `pip install psycopg2-binary` in the venv)

# Dashboards only: no example data, no uploads, no alerts/reports (they need Celery and a browser).
FEATURE_FLAGS = {
    "EMBEDDED_SUPERSET": True,
    "DASHBOARD_RBAC": False,
    "ALERT_REPORTS": False,
    "ENABLE_TEMPLATE_PROCESSING": False,
}
SQLALCHEMY_EXAMPLES_URI = None
ROW_LIMIT = 50_000

# --- Embedding: guest tokens minted by embed_api.py, always filtered to one account ---------------
GUEST_TOKEN_JWT_SECRET = _secret("superset_guest_token_secret")
GUEST_TOKEN_JWT_AUDIENCE = "metrics-platform"
GUEST_TOKEN_JWT_EXP_SECONDS = 300
# The role whose permissions guest users get (created by `metrics-platform up`, see stack/superset.py);
# which dashboards a guest may read comes from the token itself.
GUEST_ROLE_NAME = "EmbeddedViewer"


def GUEST_TOKEN_VALIDATOR_HOOK(payload: dict) -> bool:  # noqa: N802 (Superset's setting name)
    """Refuse any guest token that is not filtered to exactly one account, whoever asks for it
    (the admin REST API /api/v1/security/guest_token/ included)."""
    rls = payload.get("rls") or []
    return len(rls) == 1 and "dataset" not in rls[0] and bool(re.fullmatch(TENANT_CLAUSE, rls[0].get("clause", "")))


BLUEPRINTS = [blueprint]
# The token endpoint authenticates with its own bearer key, not a session cookie.
WTF_CSRF_EXEMPT_LIST = [
    # Superset's own defaults (6.1), then ours.
    "superset.charts.data.api.data",
    "superset.dashboards.api.cache_dashboard_screenshot",
    "superset.views.core.explore_json",
    "superset.views.core.log",
    "superset.views.datasource.views.samples",
    "embed_api.guest_token",
]

# --- No outbound network ---------------------------------------------------------------------
# The browser may load only what this server serves: the Content-Security-Policy blocks Superset's
# usage pixel and map tiles, and no theme font is fetched from a CDN.
_EMBED_ORIGINS = [o for o in os.environ.get("METRICS_PLATFORM_SUPERSET_EMBED_ORIGINS", "").split(",") if o]
TALISMAN_ENABLED = True
TALISMAN_CONFIG = {
    "content_security_policy": {
        "base-uri": ["'self'"],
        "default-src": ["'self'"],
        "img-src": ["'self'", "blob:", "data:"],
        "worker-src": ["'self'", "blob:"],
        "connect-src": ["'self'"],
        "object-src": "'none'",
        "style-src": ["'self'", "'unsafe-inline'"],
        "font-src": ["'self'", "data:"],
        "script-src": ["'self'", "'strict-dynamic'"],
        # Customer portals that may frame embedded dashboards (METRICS_PLATFORM_SUPERSET_EMBED_ORIGINS).
        "frame-ancestors": ["'self'", *_EMBED_ORIGINS],
    },
    "content_security_policy_nonce_in": ["script-src"],
    # frame-ancestors above decides who may frame; X-Frame-Options cannot list origins.
    "frame_options": None if _EMBED_ORIGINS else "SAMEORIGIN",
    "force_https": False,
    "session_cookie_secure": False,
}
THEME_FONT_URL_ALLOWED_DOMAINS: list[str] = []
MAPBOX_API_KEY = ""
PREVENT_UNSAFE_DB_CONNECTIONS = True

# "Last day" means the 24 hours before now, not yesterday's calendar day: these are live metrics.
DEFAULT_RELATIVE_START_TIME = "now"
DEFAULT_RELATIVE_END_TIME = "now"
