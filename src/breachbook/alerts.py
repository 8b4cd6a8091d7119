"""Alerts from monitoring, and the rules that turn one into an incident and a run.

Three senders are understood: Prometheus Alertmanager (webhook version 4: grouped alerts,
firing and resolved), AWS GuardDuty findings delivered by EventBridge, and a generic JSON
alert whose fields are named in the rules file. Each becomes an `Alert`: where it came from,
its key (fingerprint, finding id), firing or resolved, and flat string facts (`labels.instance`,
`severity`, ...). A rule matches facts and says which playbook and mode to start and how the
incident's fields are filled from the facts. No Prefect here: the receiver and tests use it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from breachbook.errors import BreachbookError
from breachbook.inputs import RULES, InputError, load_yaml, read_text
from breachbook.models import Incident, describe_validation_error

Short = Annotated[str, Field(max_length=1_000)]
Named = Annotated[str, Field(min_length=1, max_length=1_000)]
Labels = Annotated[dict[Annotated[str, Field(max_length=200)], Short], Field(max_length=100)]


def _iso_text(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError(
            "must be an ISO 8601 time as text"
        )  # 7 is not a time, though pydantic would take it
    return value


IsoTime = Annotated[datetime, BeforeValidator(_iso_text)]
"""A time as senders write it: text, never a bare number."""


class AlertError(BreachbookError):
    """An alert that cannot be accepted; the message names the field (HTTP 4xx)."""


class Source(StrEnum):
    ALERTMANAGER = "alertmanager"
    GUARDDUTY = "guardduty"
    GENERIC = "generic"


class Status(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


class Sent(BaseModel):
    """What senders send: unknown keys are ignored (senders add fields), known ones checked."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class AlertmanagerAlert(Sent):
    status: Status
    labels: Labels
    annotations: Labels = {}
    startsAt: IsoTime  # noqa: N815 (Alertmanager's name)
    endsAt: IsoTime | None = None  # noqa: N815
    generatorURL: Short = ""  # noqa: N815
    fingerprint: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[0-9a-zA-Z]+$")]


class AlertmanagerWebhook(Sent):
    """Alertmanager's webhook body, version 4: one group of alerts."""

    version: Literal["4"]
    groupKey: Named  # noqa: N815
    truncatedAlerts: int = Field(default=0, ge=0)  # noqa: N815
    status: Status
    receiver: Named
    groupLabels: Labels = {}  # noqa: N815
    commonLabels: Labels = {}  # noqa: N815
    commonAnnotations: Labels = {}  # noqa: N815
    externalURL: Short = ""  # noqa: N815
    alerts: list[AlertmanagerAlert] = Field(min_length=1, max_length=1_000)


class GuardDutyResource(Sent):
    resourceType: Short = ""  # noqa: N815


class GuardDutyDetail(Sent):
    id: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[0-9a-zA-Z_-]+$")]
    type: Named
    severity: float = Field(ge=0, le=10)
    title: Short = ""
    accountId: Short = ""  # noqa: N815
    region: Short = ""
    resource: GuardDutyResource = GuardDutyResource()
    updatedAt: IsoTime | None = None  # noqa: N815


class GuardDutyEvent(Sent):
    """A GuardDuty finding as EventBridge delivers it."""

    source: Literal["aws.guardduty"]
    detail_type: Literal["GuardDuty Finding"] = Field(alias="detail-type")
    id: Named
    time: IsoTime
    account: Short = ""
    region: Short = ""
    detail: GuardDutyDetail


@dataclass(frozen=True)
class Alert:
    """One alert as breachbook sees it, whoever sent it."""

    source: Source
    key: str
    """Same for every repeat of the alert: Alertmanager's fingerprint, GuardDuty's finding id."""
    status: Status
    name: str
    facts: dict[str, str]
    started_at: datetime


def _flat(prefix: str, values: dict[str, str]) -> dict[str, str]:
    return {f"{prefix}.{k}": v for k, v in values.items()}


def from_alertmanager(body: AlertmanagerWebhook) -> list[Alert]:
    found = []
    for item in body.alerts:
        labels = {**body.commonLabels, **item.labels}
        facts = {
            "source": Source.ALERTMANAGER.value,
            "status": item.status.value,
            "alertname": labels.get("alertname", ""),
            "severity": labels.get("severity", ""),
            "receiver": body.receiver,
            **_flat("labels", labels),
            **_flat("annotations", {**body.commonAnnotations, **item.annotations}),
        }
        found.append(
            Alert(
                Source.ALERTMANAGER,
                item.fingerprint,
                item.status,
                facts["alertname"] or "alert",
                facts,
                item.startsAt,
            )
        )
    return found


def guardduty_severity(score: float) -> str:
    """GuardDuty's bands: low below 4, medium below 7, high below 9, critical from 9."""
    if score >= 9:
        return "critical"
    if score >= 7:
        return "high"
    return "medium" if score >= 4 else "low"


def from_guardduty(event: GuardDutyEvent) -> list[Alert]:
    detail = event.detail
    facts = {
        "source": Source.GUARDDUTY.value,
        "status": Status.FIRING.value,
        "alertname": detail.type,
        "type": detail.type,
        "severity": guardduty_severity(detail.severity),
        "title": detail.title,
        "account": detail.accountId or event.account,
        "region": detail.region or event.region,
        "resource_type": detail.resource.resourceType,
    }
    return [Alert(Source.GUARDDUTY, detail.id, Status.FIRING, detail.type, facts, event.time)]


class GenericMapping(Sent):
    """Where a generic alert's fields are: dotted paths into its JSON."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(description="Path of the alert's id (repeats share it).")
    name: str = Field(description="Path of the alert's name.")
    status: str | None = Field(
        default=None, description="Path of its status; absent in the rules or the alert: firing."
    )
    resolved_values: list[str] = ["resolved", "ok", "closed"]
    facts: dict[str, str] = Field(
        default={}, description="Fact name -> path, for rules; absent in an alert: left out."
    )


def _at_path(data: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            raise AlertError(f"{path}: missing in the alert")
        data = data[part]
    return data


def _has(data: Any, path: str) -> bool:
    try:
        _at_path(data, path)
    except AlertError:
        return False
    return True


def _scalar(value: Any, path: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise AlertError(f"{path}: must be a string or a number")
    text = str(value)
    if not 0 < len(text) <= 1_000:
        raise AlertError(f"{path}: must have 1 to 1,000 characters")
    return text


def from_generic(body: Any, mapping: GenericMapping, now: datetime) -> list[Alert]:
    if not isinstance(body, dict):
        raise AlertError("body: must be a JSON object")
    key = _scalar(_at_path(body, mapping.key), mapping.key)
    if not re.fullmatch(r"[A-Za-z0-9._:-]{1,128}", key):
        raise AlertError(f"{mapping.key}: letters, digits and . _ : - only, at most 128")
    name = _scalar(_at_path(body, mapping.name), mapping.name)
    status = Status.FIRING
    if mapping.status is not None and _has(body, mapping.status):
        said = _scalar(_at_path(body, mapping.status), mapping.status).lower()
        status = Status.RESOLVED if said in mapping.resolved_values else Status.FIRING
    facts = {"source": Source.GENERIC.value, "status": status.value, "alertname": name}
    for fact, path in mapping.facts.items():  # a fact the alert lacks is left out
        if _has(body, path):
            facts[fact] = _scalar(_at_path(body, path), path)
    return [Alert(Source.GENERIC, key, status, name, facts, now)]


LIST_FIELDS = frozenset({"access_key_ids", "hosts", "source_addresses", "data_categories"})
TEMPLATE = re.compile(r"\{([A-Za-z0-9_.-]+)\}")


class Rule(Sent):
    """When an alert's facts equal `match`, start `playbook` in `mode` on an incident whose
    fields are `incident` (`{labels.instance}` takes a fact)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{1,30}$")]
    match: dict[str, str]
    playbook: str = "customer-data-breach"
    mode: Literal["drill", "live"] = "drill"
    incident: dict[str, str] = {}
    contain_at_once: bool = True
    """Also run the playbook's first phase in the receiver's process as soon as the alert is
    recorded (breachbook.containment), beside the whole run on the served deployment."""

    def applies(self, alert: Alert) -> bool:
        return all(alert.facts.get(k) == v for k, v in self.match.items())

    def incident_for(self, alert: Alert) -> Incident:
        """The incident this alert opens: its id is the rule's name and a digest of the
        alert's key, so every repeat names the same incident."""
        digest = hashlib.sha256(f"{alert.source}:{alert.key}".encode()).hexdigest()[:12]
        raw: dict[str, Any] = {
            "id": f"{self.name}-{digest}",
            "title": f"{alert.name} ({alert.source})",
            "started_at": alert.started_at,
            "discovered_at": max(alert.started_at, datetime.now(UTC)),
        }
        for field, template in self.incident.items():
            value = _fill(template, alert.facts, f"rule {self.name}: incident.{field}")
            raw[field] = ([value] if value else []) if field in LIST_FIELDS else value
        try:
            return Incident.model_validate(raw)
        except ValidationError as exc:
            raise AlertError(f"rule {self.name}: {describe_validation_error(exc)}") from None


def _fill(template: str, facts: dict[str, str], where: str) -> str:
    def fact(found: re.Match[str]) -> str:
        name = found.group(1)
        if name not in facts:
            raise AlertError(f"{where}: the alert has no {name}")
        return facts[name]

    return TEMPLATE.sub(fact, template)


class AlertRules(Sent):
    """The rules file (BREACHBOOK_ALERT_RULES): first matching rule wins; no match: the
    alert is recorded and starts nothing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    generic: GenericMapping | None = None
    rules: list[Rule] = Field(default=[], max_length=1_000)

    def rule_for(self, alert: Alert) -> Rule | None:
        return next((rule for rule in self.rules if rule.applies(alert)), None)

    @classmethod
    def load(cls, path: Path) -> AlertRules:
        try:
            raw = load_yaml(read_text(path, RULES), str(path))
            return cls.model_validate(raw)
        except InputError as exc:
            raise BreachbookError(str(exc)) from None
        except ValidationError as exc:
            raise BreachbookError(f"{path}: {describe_validation_error(exc)}") from None
