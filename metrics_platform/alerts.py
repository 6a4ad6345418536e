"""Alert delivery: a Slack-compatible JSON POST, or the log when no webhook is configured."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Alert:
    """One message. ``kind`` is "alert" or "recovery"; ``key`` names what it is about."""

    title: str
    text: str
    kind: str = "alert"
    severity: str = "critical"
    key: str = ""
    fields: dict[str, str | float | int] = field(default_factory=dict)

    def payload(self) -> dict[str, object]:
        icon = ":rotating_light:" if self.kind == "alert" else ":white_check_mark:"
        # "text" is what Slack (and Mattermost, Rocket.Chat, Teams' Slack-compatible hooks) render;
        # the rest lets other receivers route and de-duplicate.
        return {"text": f"{icon} *{self.title}*\n{self.text}", **asdict(self)}


def send(alert: Alert, webhook_url: str | None, timeout_s: float = 10.0) -> bool:
    """Deliver ``alert``; returns True when posted, False when only logged (no webhook).

    A receiver that fails is an error with the URL's host and the status, so a broken alert
    route is noticed rather than silently swallowed.
    """
    if not webhook_url:
        log.warning("ALERT (no METRICS_PLATFORM_ALERT_WEBHOOK_URL set) %s: %s", alert.title, alert.text)
        return False
    body = json.dumps(alert.payload()).encode()
    request = urllib.request.Request(webhook_url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            response.read()
    except (urllib.error.URLError, TimeoutError) as exc:
        host = urllib.request.urlparse(webhook_url).netloc
        raise RuntimeError(f"alert webhook at {host} failed for {alert.title!r}: {exc}") from exc
    return True
