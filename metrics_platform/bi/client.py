"""A small client for Superset's REST API: login, CSRF token, JSON requests with errors that say what failed."""

from __future__ import annotations

from typing import Any

import requests


class SupersetError(RuntimeError):
    """A Superset API call failed; the message holds the method, path, status and Superset's answer."""


def rison_filter(column: str, value: str | int, operator: str = "eq") -> str:
    """A rison ``q`` argument selecting rows where ``column`` matches ``value`` (list endpoints)."""
    # rison quotes strings with ' and escapes ' and ! with !
    encoded = str(value) if isinstance(value, int) else "'" + value.replace("!", "!!").replace("'", "!'") + "'"
    return f"(filters:!((col:{column},opr:{operator},value:{encoded})),page_size:100)"


class SupersetClient:
    """An authenticated session against one Superset (JWT bearer + CSRF token, as the UI's API calls)."""

    def __init__(self, base_url: str, username: str, password: str, timeout_s: float = 120.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.session = requests.Session()
        response = self.session.post(
            f"{self.base_url}/api/v1/security/login",
            json={"username": username, "password": password, "provider": "db", "refresh": False},
            timeout=timeout_s,
        )
        if response.status_code != 200:
            raise SupersetError(f"login to {self.base_url} as {username!r}: {response.status_code} {response.text}")
        self.session.headers["Authorization"] = f"Bearer {response.json()['access_token']}"
        csrf = self.get("/api/v1/security/csrf_token/")["result"]
        # Flask-WTF checks the token against the session cookie and the referrer on writes.
        self.session.headers.update({"X-CSRFToken": csrf, "Referer": self.base_url})

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """One call; the decoded JSON answer, or SupersetError with Superset's message."""
        response = self.session.request(method, f"{self.base_url}{path}", timeout=self.timeout_s, **kwargs)
        if response.status_code >= 400:
            raise SupersetError(f"{method} {path}: {response.status_code} {response.text[:2000]}")
        if not response.content:
            return None
        return response.json()

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, json=body)

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, json=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def find(self, resource: str, column: str, value: str | int, operator: str = "eq") -> list[dict[str, Any]]:
        """Rows of a list endpoint (``/api/v1/<resource>/``) where ``column`` matches ``value``
        (operators: eq, sw for "starts with", ct for "contains")."""
        return self.get(f"/api/v1/{resource}/", params={"q": rison_filter(column, value, operator)})["result"]
