"""Notifications of alert transitions: Slack-compatible webhooks, generic JSON webhooks, e-mail (SMTP).

Each transition is delivered once to each of its rule's channels, with a link to the dashboard
that shows it. A channel that fails is reported (with its name and the receiver's answer) and
does not stop the others; a channel whose URL variable or SMTP server is not configured is skipped
and says so.
"""

from __future__ import annotations

import json
import os
import smtplib
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage

from metrics_platform.alerting.rules import Channel, Rule
from metrics_platform.alerting.state import Transition


@dataclass(frozen=True)
class Smtp:
    """The SMTP server e-mail channels send through (METRICS_PLATFORM_SMTP_*)."""

    host: str
    port: int = 25
    sender: str = "metrics-platform@localhost"
    username: str = ""
    password: str = field(default="", repr=False)
    starttls: bool = False


@dataclass(frozen=True)
class Notice:
    """A transition as people read it."""

    transition: Transition
    description: str
    dashboard_url: str

    @property
    def firing(self) -> bool:
        return self.transition.state == "firing"

    @property
    def title(self) -> str:
        t = self.transition
        word = f"FIRING [{t.severity}]" if self.firing else "RESOLVED"
        return f"{word} {t.rule}: {t.key}"

    @property
    def text(self) -> str:
        lines = [self.transition.detail]
        if self.description:
            lines.append(self.description)
        lines.append(f"Dashboard: {self.dashboard_url}")
        return "\n".join(lines)

    def slack(self) -> dict[str, object]:
        """Slack's incoming-webhook body (also what Mattermost, Rocket.Chat and Teams' Slack hooks read)."""
        icon = ":rotating_light:" if self.firing else ":white_check_mark:"
        t = self.transition
        body = f"{icon} *{self.title}*\n{t.detail}"
        if self.description:
            body += f"\n{self.description}"
        return {"text": f"{body}\n<{self.dashboard_url}|Open the dashboard>"}

    def webhook(self) -> dict[str, object]:
        """A plain JSON body for any receiver: every field, no chat formatting."""
        t = self.transition
        return {
            "state": t.state,
            "rule": t.rule,
            "rule_type": t.rule_type,
            "key": t.key,
            "account_id": t.account_id,
            "severity": t.severity,
            "value": t.value,
            "threshold": t.threshold,
            "title": self.title,
            "message": t.detail,
            "description": self.description,
            "dashboard_url": self.dashboard_url,
            "at": datetime.fromtimestamp(t.at, UTC).isoformat(timespec="seconds"),
        }

    def email(self, sender: str, to: tuple[str, ...]) -> EmailMessage:
        message = EmailMessage()
        message["Subject"] = self.title
        message["From"] = sender
        message["To"] = ", ".join(to)
        message.set_content(self.text + "\n")
        return message


def notice(transition: Transition, rule: Rule | None, dashboard_base_url: str) -> Notice:
    """The notice of a transition, linking to its rule's dashboard."""
    slug = rule.dashboard_slug if rule is not None else "pipeline-health"
    url = f"{dashboard_base_url.rstrip('/')}/superset/dashboard/{slug}/"
    return Notice(transition, rule.description if rule is not None else "", url)


def _post(url: str, body: Mapping[str, object], timeout_s: float) -> None:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            response.read()
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise RuntimeError(f"POST to {urllib.request.urlparse(url).netloc} failed: {exc}") from exc


def deliver(
    item: Notice,
    channels: list[Channel],
    smtp: Smtp | None,
    environ: Mapping[str, str] | None = None,
    timeout_s: float = 10.0,
) -> tuple[list[str], list[str]]:
    """Send ``item`` to each channel; returns (channels that took it, problems as text)."""
    environ = os.environ if environ is None else environ
    delivered: list[str] = []
    problems: list[str] = []
    for channel in channels:
        try:
            if channel.type in ("slack", "webhook"):
                url = channel.url or environ.get(channel.url_env, "")
                if not url:
                    problems.append(f"channel {channel.name}: {channel.url_env} is not set; not sent")
                    continue
                _post(url, item.slack() if channel.type == "slack" else item.webhook(), timeout_s)
            else:
                if smtp is None or not smtp.host:
                    problems.append(f"channel {channel.name}: METRICS_PLATFORM_SMTP_HOST is not set; not sent")
                    continue
                with smtplib.SMTP(smtp.host, smtp.port, timeout=timeout_s) as server:
                    if smtp.starttls:
                        server.starttls()
                    if smtp.username:
                        server.login(smtp.username, smtp.password)
                    server.send_message(item.email(smtp.sender, channel.to))
            delivered.append(channel.name)
        except (RuntimeError, OSError, smtplib.SMTPException) as exc:
            problems.append(f"channel {channel.name} ({channel.type}): {exc}")
    return delivered, problems
