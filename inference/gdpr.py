"""GDPR: what is stored about an API user (``export_user_data``) and its erasure (``erase_user``).

Where a user appears:

* their account (``auth_user``), groups and permissions, API tokens, dashboard/admin sessions,
  admin log entries and sign-in records (django-axes, keyed by user name);
* their pseudonym (``RequesterPseudonym``): the prediction log and the compliance records carry
  that random id, never the user name;
* their user name where they acted: who requested a training or pipeline run
  (``requested_by``), who changed a model's status (``DeploymentEvent.actor``), who acknowledged or
  resolved an alert, and the texts that quote it ("cancelled by ...") by user name, e-mail address or
  full name.

``erase_user`` deletes the account, tokens, sessions, admin log entries and sign-in records; replaces the user name
by ``erased user`` where they acted; empties the prediction log's requester; and deletes the
pseudonym mapping. The compliance records are kept (books and records), pseudonymized: they still
carry the random pseudonym, which nothing leads back to once the mapping is gone, and their hash
chain still verifies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from django.apps import apps
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.contrib.sessions.models import Session
from django.db import models, transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token

from inference.models import ComplianceRecord, PredictionLog, RequesterPseudonym
from inference.records_chain import FIELDS as RECORD_FIELDS

ERASED_LABEL = "erased user"
MIN_QUOTED_LENGTH = 3  # shorter user names are looked for only in the fields that hold a user name

# (app label, model, fields holding a user name, free-text fields that may quote one)
MENTIONS: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("training", "TrainingRun", ("requested_by",), ("error", "log")),
    ("training", "PipelineRun", ("requested_by",), ("reason", "status_reason", "error")),
    ("training", "PipelineStage", (), ("error",)),
    ("training", "RetrainTrigger", ("requested_by",), ("reason",)),
    ("registry", "DeploymentEvent", ("actor",), ("reason",)),
    ("monitoring", "Alert", ("acknowledged_by",), ("message",)),
)


# (app label, model): rows keyed by the user name itself (sign-in records), exported and deleted whole
BY_USERNAME: tuple[tuple[str, str], ...] = (
    ("axes", "AccessLog"), ("axes", "AccessAttempt"), ("axes", "AccessFailureLog"),
)
SECRET_FIELDS = {"session_hash"}


def _by_username_models() -> list[Any]:
    """The installed ones of ``BY_USERNAME``."""
    out = []
    for app_label, model_name in BY_USERNAME:
        try:
            out.append(apps.get_model(app_label, model_name))
        except LookupError:
            continue
    return out


class UnknownUser(LookupError):
    pass


def find_user(identifier: str) -> Any:
    """The user with this user name, else (a number) this id."""
    users = get_user_model().objects
    user = users.filter(**{get_user_model().USERNAME_FIELD: identifier}).first()
    if user is None and str(identifier).isdigit():
        user = users.filter(pk=int(identifier)).first()
    if user is None:
        raise UnknownUser(f"no user {identifier!r} (a user name, or an id)")
    return user


def _mask(secret: str) -> str:
    return f"{secret[:4]}...({len(secret)} characters)" if secret else ""


def _names(text: str, flags: int = 0) -> re.Pattern[str]:
    """``text`` (a user name, e-mail address or full name) as a whole word: not inside a longer name
    or an e-mail address."""
    return re.compile(rf"(?<![\w.@+-]){re.escape(text)}(?![\w@+-]|\.\w)", flags)


def _exact(value: str, username: str) -> bool:
    return value == username or value.startswith(username + " (")  # "alice (admin)"


@dataclass
class _Reader:
    tables: list[str] = field(default_factory=list)

    def read(self, model_or_table: Any) -> None:
        table = model_or_table if isinstance(model_or_table, str) else model_or_table._meta.db_table
        if table not in self.tables:
            self.tables.append(table)


def _values(qs: models.QuerySet, fields: list[str]) -> list[dict[str, Any]]:
    return [dict(row) for row in qs.values(*fields)]


def _sessions_of(user: Any) -> list[Any]:
    out = []
    for session in Session.objects.all().iterator():
        try:
            data = session.get_decoded()
        except Exception:  # noqa: BLE001 - a corrupt session names nobody
            continue
        if str(data.get("_auth_user_id", "")) == str(user.pk):
            out.append(session)
    return out


# (text, the ORM lookup that finds it, the pattern that matches it as a whole word)
Quotes = list[tuple[str, str, re.Pattern[str]]]


def _quoted_as(user: Any) -> Quotes:
    """``(text, lookup, pattern)`` for each way free text may quote ``user``: the user name as
    written, the e-mail address and the full name in any case. Names shorter than
    ``MIN_QUOTED_LENGTH`` ("a" or "jo" as a word is no evidence of the user) and a lone first or
    last name are not looked for."""
    out = []
    username = user.get_username()
    if len(username) >= MIN_QUOTED_LENGTH:
        out.append((username, "contains", _names(username)))
    email = (getattr(user, "email", "") or "").strip()
    full_name = " ".join((user.get_full_name() if hasattr(user, "get_full_name") else "").split())
    for text in (email, full_name if " " in full_name else ""):
        if len(text) >= MIN_QUOTED_LENGTH and text != username:
            out.append((text, "icontains", _names(text, flags=re.IGNORECASE)))
    return out


def _mentions(user: Any, reader: _Reader, quoted: Quotes) -> list[tuple[Any, str, Any]]:
    """``(row, field, value)`` for every field that names ``user`` (see ``MENTIONS``; ``quoted``:
    ``_quoted_as(user)``), once each."""
    username = user.get_username()
    found: dict[tuple[str, Any, str], tuple[Any, str, Any]] = {}
    for app_label, model_name, exact, texts in MENTIONS:
        model = apps.get_model(app_label, model_name)
        reader.read(model)
        for name in exact:
            for row in model.objects.filter(**{f"{name}__startswith": username}).iterator():
                if _exact(getattr(row, name) or "", username):
                    found[(model._meta.db_table, row.pk, name)] = (row, name, getattr(row, name))
        for name in texts:
            for text, lookup, pattern in quoted:
                for row in model.objects.filter(**{f"{name}__{lookup}": text}).iterator():
                    value = getattr(row, name) or ""
                    if pattern.search(value):
                        found.setdefault((model._meta.db_table, row.pk, name), (row, name, value))
    alert = apps.get_model("monitoring", "Alert")
    for row in alert.objects.filter(details__resolved_by=username).iterator():
        found[(alert._meta.db_table, row.pk, "details.resolved_by")] = (row, "details.resolved_by", username)
    return list(found.values())


def export_user_data(user: Any) -> dict[str, Any]:
    """Everything stored about ``user``, with ``tables_read``: every table this read."""
    reader = _Reader()
    user_model = get_user_model()
    reader.read(user_model)
    account = {f.attname: getattr(user, f.attname) for f in user_model._meta.concrete_fields if f.attname != "password"}
    account["password"] = ("set (its hash is not exported)" if user.has_usable_password() else "none (no password login)")
    reader.read(user_model.groups.through)
    reader.read(Group)
    reader.read(user_model.user_permissions.through)
    reader.read(Permission)
    reader.read(ContentType)  # permissions and admin log entries name their model through it
    reader.read(Token)
    tokens = [{"key": _mask(t.key), "created": t.created} for t in Token.objects.filter(user=user)]
    reader.read(Session)
    sessions = [{"session_key": _mask(s.session_key), "expire_date": s.expire_date} for s in _sessions_of(user)]
    reader.read(LogEntry)
    admin_log = _values(LogEntry.objects.filter(user=user).order_by("action_time"),
                        ["action_time", "content_type__app_label", "content_type__model", "object_id",
                         "object_repr", "action_flag", "change_message"])
    reader.read(RequesterPseudonym)
    pseudonym = RequesterPseudonym.objects.filter(user=user).values_list("pseudonym", flat=True).first()
    reader.read(PredictionLog)
    reader.read(ComplianceRecord)
    prediction_log: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    if pseudonym:
        prediction_log = _values(PredictionLog.objects.filter(requester=pseudonym).order_by("created_at", "id"),
                                 ["id", "created_at", "model_name", "model_version_id", "ticker", "feature_date",
                                  "input_hash", "prediction", "expected_return", "confidence", "latency_ms",
                                  "cached", "requester"])
        records = _values(ComplianceRecord.objects.filter(requester=pseudonym).order_by("seq"), list(RECORD_FIELDS))
    mentions = [{"table": row._meta.db_table, "id": row.pk, "field": name, "value": value}
                for row, name, value in _mentions(user, reader, _quoted_as(user))]
    sign_ins: dict[str, list[dict[str, Any]]] = {}
    for model in _by_username_models():
        reader.read(model)
        fields = [f.attname for f in model._meta.concrete_fields]
        rows = _values(model.objects.filter(username=user.get_username()).order_by("pk"), fields)
        sign_ins[model._meta.db_table] = [{k: (_mask(v) if k in SECRET_FIELDS and v else v) for k, v in row.items()}
                                          for row in rows]
    return {
        "user": user.get_username(),
        "exported_at": timezone.now(),
        "account": account,
        "groups": list(user.groups.values_list("name", flat=True)),
        "permissions": sorted(f"{app}.{code}" for app, code in
                              user.user_permissions.values_list("content_type__app_label", "codename")),
        "api_tokens": tokens,
        "sessions": sessions,
        "admin_log": admin_log,
        "pseudonym": pseudonym,
        "prediction_log": prediction_log,
        "compliance_records": records,
        "mentions": mentions,
        "sign_in_records": sign_ins,
        "tables_read": reader.tables,
    }


def _replace(value: str, username: str, quoted: Quotes, *, exact: bool) -> str:
    """``value`` with the user's name replaced by ``ERASED_LABEL``: the whole value of a field that
    holds a user name (``exact``), else every quote of it (``quoted``: ``_quoted_as``)."""
    if exact:
        return ERASED_LABEL + value[len(username):] if _exact(value, username) else value
    for _text, _lookup, pattern in quoted:
        value = pattern.sub(ERASED_LABEL, value)
    return value


def erase_user(user: Any, *, dry_run: bool = False) -> dict[str, Any]:
    """Delete or pseudonymize everything that names ``user`` (see the module docstring); returns
    ``{table: rows}`` changed or deleted, and ``tables_read``. ``dry_run``: count only."""
    reader = _Reader()
    username = user.get_username()
    changed: dict[str, int] = {}

    def count(model: Any, n: int) -> None:
        table = model if isinstance(model, str) else model._meta.db_table
        reader.read(table)
        if n:
            changed[table] = changed.get(table, 0) + n

    with transaction.atomic():
        pseudonym = RequesterPseudonym.objects.filter(user=user).values_list("pseudonym", flat=True).first()
        reader.read(RequesterPseudonym)
        logs = PredictionLog.objects.filter(requester=pseudonym) if pseudonym else PredictionLog.objects.none()
        count(PredictionLog, logs.count() if dry_run else logs.update(requester=""))
        quoted = _quoted_as(user)
        by_row: dict[tuple[type, Any], list[tuple[str, Any]]] = {}
        for row, name, _value in _mentions(user, reader, quoted):
            by_row.setdefault((type(row), row.pk), []).append((name, row))
        exact_fields = {(a, m): set(e) for a, m, e, _t in MENTIONS}
        for (model, _pk), items in by_row.items():
            row = items[0][1]
            row.refresh_from_db()
            updates: list[str] = []
            for name, _row in items:
                if name == "details.resolved_by":
                    row.details = {**(row.details or {}), "resolved_by": ERASED_LABEL}
                    updates.append("details")
                    continue
                exact = name in exact_fields.get((model._meta.app_label, model.__name__), set())
                setattr(row, name, _replace(getattr(row, name) or "", username, quoted, exact=exact))
                updates.append(name)
            if not dry_run:
                model.objects.filter(pk=row.pk).update(**{n: getattr(row, n) for n in set(updates)})
            count(model, 1)
        sessions = _sessions_of(user)
        count(Session, len(sessions))
        tokens = Token.objects.filter(user=user)
        count(Token, tokens.count())
        entries = LogEntry.objects.filter(user=user)
        count(LogEntry, entries.count())
        count(RequesterPseudonym, 1 if pseudonym else 0)
        sign_ins = [(model, model.objects.filter(username=username)) for model in _by_username_models()]
        for model, rows in sign_ins:
            count(model, rows.count())
        count(get_user_model(), 1)
        if not dry_run:
            Session.objects.filter(pk__in=[s.pk for s in sessions]).delete()
            tokens.delete()
            entries.delete()
            RequesterPseudonym.objects.filter(user=user).delete()
            for _model, rows in sign_ins:
                rows.delete()
            user.delete()  # groups, permissions (and anything else on cascade)
    return {"user": username, "dry_run": dry_run, "changed": changed, "tables_read": reader.tables,
            "compliance_records": "kept, pseudonymized (their pseudonym no longer leads to the user)"}

