"""Alert notifications: email (``ALERT_EMAILS``) and a webhook (``ALERT_WEBHOOK_URL``), sent once per
alert on its first occurrence, when its severity rises, then at most once per cooldown; a webhook URL
(which may carry its secret in the path, as Slack's do) is never logged in full."""

from __future__ import annotations

import logging
from datetime import datetime
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.core.mail import send_mail
from django.db.models import F
from django.utils import timezone

from monitoring import config
from monitoring.models import Alert
from monitoring.selectors import SEVERITY_RANK

logger = logging.getLogger("monitoring")


def _should_notify(alert: Alert, *, now: datetime, cooldown: float) -> bool:
    if alert.resolved:
        return False
    rose = SEVERITY_RANK.get(alert.severity, 0) > SEVERITY_RANK.get(alert.notified_severity or "", -1)
    if alert.last_notified_at is None or rose:
        return True
    if alert.acknowledged:
        return False
    return (now - alert.last_notified_at).total_seconds() >= cooldown


def redacted_url(url: str) -> str:
    """``scheme://host[:port]/[redacted]``: what a log may say about a URL that carries a secret in its
    path, query or user info (a Slack-style webhook)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # a malformed port
        port = ""
    return f"{parts.scheme or '?'}://{host}{port}/[redacted]"


def scrub_url(text: str, url: str) -> str:
    """``text`` (an error message that may quote ``url``) with the URL's path, query and user info
    replaced by ``[redacted]``."""
    parts = urlsplit(url)
    path_query = parts.path + (f"?{parts.query}" if parts.query else "")
    secrets_ = {url, path_query, parts.path, parts.query, parts.username or "", parts.password or ""}
    for secret in sorted((s for s in secrets_ if len(s) > 1), key=len, reverse=True):
        text = text.replace(secret, "[redacted]")
    return text


def notify_alert(*, alert: Alert, now: datetime | None = None) -> bool:
    """Email ``ALERT_EMAILS`` and POST ``ALERT_WEBHOOK_URL`` about ``alert`` if it is due: on its first
    occurrence, when its severity rises, then at most once per cooldown (none while acknowledged).

    The notification is claimed in the database first (compare-and-set on ``last_notified_at``), so
    two workers evaluating at once send it once. Delivery errors are logged, never raised.
    """
    now = now or timezone.now()
    cfg = config.load()
    alert.refresh_from_db()
    if not _should_notify(alert, now=now, cooldown=cfg.notification_cooldown_seconds):
        return False
    claimed = Alert.objects.filter(pk=alert.pk, last_notified_at=alert.last_notified_at,
                                   notified_severity=alert.notified_severity).update(
        last_notified_at=now, notifications_sent=F("notifications_sent") + 1, notified_severity=alert.severity
    )
    if not claimed:
        return False
    subject = f"[InvestML {alert.severity.upper()}] {alert.kind}: {alert.key}"
    body = (
        f"{alert.message}\n\nkind: {alert.kind}\nkey: {alert.key}\nseverity: {alert.severity}\n"
        f"first seen: {alert.first_seen.isoformat()}\nlast seen: {alert.last_seen.isoformat()}\n"
        f"occurrences: {alert.count}\n"
    )
    if cfg.alert_emails:
        try:
            send_mail(subject, body, getattr(settings, "DEFAULT_FROM_EMAIL", None), cfg.alert_emails)
        except Exception:  # noqa: BLE001 - a mail outage must not stop monitoring
            logger.exception("alert email for %s/%s failed", alert.kind, alert.key)
    if cfg.webhook_url:
        payload = {
            "id": alert.pk, "kind": alert.kind, "key": alert.key, "severity": alert.severity,
            "message": alert.message, "count": alert.count, "details": alert.details,
            "first_seen": alert.first_seen.isoformat(), "last_seen": alert.last_seen.isoformat(),
        }
        shown = redacted_url(cfg.webhook_url)  # the path and query may hold the secret (Slack-style URLs)
        try:
            response = requests.post(cfg.webhook_url, json=payload, timeout=cfg.webhook_timeout_seconds)
            if response.status_code >= 400:
                logger.warning("alert webhook answered HTTP %s for %s/%s (%s)", response.status_code,
                               alert.kind, alert.key, shown)
        except requests.RequestException as exc:
            logger.warning("alert webhook failed for %s/%s (%s): %s: %s", alert.kind, alert.key, shown,
                           type(exc).__name__, scrub_url(str(exc), cfg.webhook_url))
    return True
