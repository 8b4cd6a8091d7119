"""The alert receiver: HTTP in, incidents and runs out, nothing lost.

POST /alerts/alertmanager, /alerts/guardduty or /alerts/generic. A request is checked in this
order, cheapest first, and refused with a 4xx naming the problem: size (413), signature or
token (401), JSON (400), nesting (400), shape (422). An accepted alert is written to the
ledger (one hash-chained entry, and for a firing alert an atomic claim of its run's start)
before the answer goes back, so an acknowledged alert is never lost: a run that fails to start
is retried, and one still unstarted when the process stops is started when it comes back.
Repeats of an alert (same fingerprint or finding id) join the incident it opened; a resolved
alert is recorded and starts nothing.

Senders authenticate with HMAC-SHA256 over `TIMESTAMP.BODY` (headers X-Breachbook-Timestamp,
X-Breachbook-Signature: sha256=HEX) within a replay window, or with a bearer token where the
sender can do no better (Alertmanager); both compared in constant time.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import yaml
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from breachbook.alerts import (
    Alert,
    AlertError,
    AlertmanagerWebhook,
    AlertRules,
    GuardDutyEvent,
    Rule,
    Source,
    Status,
    from_alertmanager,
    from_generic,
    from_guardduty,
)
from breachbook.anchors import Anchoring
from breachbook.clock import SystemClock
from breachbook.errors import BreachbookError
from breachbook.ledger import Claim, Entry, ItemStatus, Ledger
from breachbook.models import describe_validation_error
from breachbook.settings import Settings, incidents_dir
from breachbook.wiring import live_ledger_url

log = logging.getLogger("breachbook.receiver")

MAX_BODY = 1024 * 1024
"""Bytes in one request: a full Alertmanager group of 1,000 alerts fits easily."""
MAX_DEPTH = 32
"""Nesting of JSON objects and arrays; GuardDuty's deepest finding is about 10."""
START_STEP = "alert.start"
RUN_ID = "receiver"
UNROUTED = "alerts-unrouted"
"""The ledger chain of alerts no rule matches: recorded, nothing started."""
START_RETRIES = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 60.0)
"""Seconds before each retry of a run that failed to start (about two minutes in all); then
the claim is failed, and the alert's next repeat (or the next start of the receiver) tries
again."""


@dataclass(frozen=True)
class StartRequest:
    """A run to start for an incident the receiver opened."""

    incident_id: str
    incident_file: Path
    playbook: str
    mode: Literal["drill", "live"]
    """The rule's choice, passed along to the deployment and containment."""
    generation: int = 1
    """Which claim of the incident's run this is (a start that failed and was claimed again
    is a new generation)."""
    contain_at_once: bool = False


class Starter(Protocol):
    """Starts a run; returns an id for it (a Prefect flow run id)."""

    async def start(self, request: StartRequest) -> str: ...


class Refused(Exception):
    """A request refused with an HTTP status and one line."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Taken:
    """What the ledger made of one alert."""

    alert: Alert
    outcome: str
    """starting, repeat, resolved or no rule."""
    incident_id: str
    claim: Claim | None = None
    request: StartRequest | None = None

    def answer(self) -> dict[str, str]:
        return {
            "key": self.alert.key,
            "status": self.alert.status.value,
            "incident": self.incident_id,
            "outcome": self.outcome,
        }


class AlertBook:
    """The receiver's side of the ledger: every alert recorded (hash-chained, signed head),
    each incident's run claimed once."""

    def __init__(self, ledger: Ledger, anchoring: Anchoring, incidents: Path) -> None:
        self.ledger = ledger
        self.anchoring = anchoring
        self.incidents = incidents

    def _entry(
        self,
        incident_id: str,
        alert: Alert,
        outcome: str,
        details: dict[str, Any],
        step_id: str = "alert",
    ) -> Entry:
        return Entry(
            incident_id=incident_id,
            run_id=RUN_ID,
            step_id=step_id,
            target=alert.key,
            phase="alert",
            actor=f"alert:{alert.source.value}",
            mode=str(details.get("mode", "none")),
            outcome=outcome,
            details={"name": alert.name, "source": alert.source.value, **details},
        )

    def take(self, alert: Alert, rule: Rule | None) -> Taken:
        if rule is None:
            self.ledger.append(self._entry(UNROUTED, alert, "no rule", {}))
            self._sign(UNROUTED)
            return Taken(alert, "no rule", UNROUTED)
        incident = rule.incident_for(alert)
        details = {
            "rule": rule.name,
            "mode": rule.mode,
            "playbook": rule.playbook,
            "contain_at_once": rule.contain_at_once,
        }
        if alert.status is Status.RESOLVED:
            self.ledger.append(self._entry(incident.id, alert, "resolved", details))
            self._sign(incident.id)
            return Taken(alert, "resolved", incident.id)
        path = self.incidents / f"{incident.id}.yaml"
        if not path.exists():
            self.incidents.mkdir(parents=True, exist_ok=True)
            document = yaml.safe_dump(incident.model_dump(mode="json", exclude_defaults=True))
            scratch = path.with_suffix(".tmp")
            scratch.write_text(document, encoding="utf-8")
            scratch.replace(path)
        request = StartRequest(
            incident.id, path, rule.playbook, rule.mode, contain_at_once=rule.contain_at_once
        )
        self.ledger.put_record(incident.id, "receiver", "start", "run", details, RUN_ID)
        claim = self.ledger.claim(
            self._entry(incident.id, alert, "claimed", details, START_STEP), "run"
        )
        if claim is None:
            self.ledger.append(self._entry(incident.id, alert, "repeat", details))
            self._sign(incident.id)
            return Taken(alert, "repeat", incident.id)
        self._sign(incident.id)
        request = replace(request, generation=claim.generation)
        return Taken(alert, "starting", incident.id, claim, request)

    def started(self, taken: Taken, run: str) -> None:
        assert taken.claim is not None
        entry = self._entry(taken.incident_id, taken.alert, "done", {"run": run}, START_STEP)
        self.ledger.settle(taken.claim, ItemStatus.DONE, entry)
        self._sign(taken.incident_id)

    def not_started(self, taken: Taken, reason: str) -> None:
        assert taken.claim is not None
        entry = self._entry(taken.incident_id, taken.alert, "failed", {"error": reason}, START_STEP)
        self.ledger.settle(taken.claim, ItemStatus.FAILED, entry)
        self._sign(taken.incident_id)

    def unstarted(self) -> list[Taken]:
        """Runs claimed but never started (the process stopped before): to start now."""
        found = []
        for incident_id, item in self.ledger.items_of_step(START_STEP, ItemStatus.CLAIMED):
            details = self.ledger.get_record(incident_id, "receiver", "start", "run") or {}
            path = self.incidents / f"{incident_id}.yaml"
            alert = Alert(
                Source.GENERIC,
                item.key,
                Status.FIRING,
                str(details.get("name", "alert")),
                {},
                datetime.now(UTC),
            )
            request = StartRequest(
                incident_id,
                path,
                str(details.get("playbook", "customer-data-breach")),
                "live" if details.get("mode") == "live" else "drill",
                item.generation,
            )
            claim = Claim(incident_id, START_STEP, item.key, item.generation)
            found.append(Taken(alert, "starting", incident_id, claim, request))
        return found

    def _sign(self, incident_id: str) -> None:
        self.anchoring.sign_head(self.ledger, incident_id, RUN_ID, "alert")


def depth_of(value: Any) -> int:
    """Nesting of a parsed JSON value, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


class Auth:
    """Bearer token or HMAC signature, compared in constant time; signatures seen within
    the replay window are refused a second time."""

    def __init__(
        self,
        token: str | None,
        hmac_key: str | None,
        window: int,
        now: Callable[[], float] = time.time,
    ) -> None:
        if not token and not hmac_key:
            raise BreachbookError(
                "the alert receiver needs BREACHBOOK_ALERT_TOKEN or BREACHBOOK_ALERT_HMAC_KEY"
            )
        self._token = token.encode() if token else None
        self._key = hmac_key.encode() if hmac_key else None
        self._window = window
        self._now = now
        self._seen: dict[str, float] = {}

    def check(self, headers: Any, body: bytes) -> None:
        signature = headers.get("x-breachbook-signature")
        if signature is not None and self._key is not None:
            self._check_signature(headers.get("x-breachbook-timestamp"), signature, body)
            return
        given = headers.get("authorization")
        if given is not None and self._token is not None:
            scheme, _, value = given.partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(
                value.strip().encode(), self._token
            ):
                return
            raise Refused(401, "wrong bearer token")
        raise Refused(
            401, "unauthenticated: sign the body (X-Breachbook-Signature) or give the token"
        )

    def _check_signature(self, stamp: str | None, signature: str, body: bytes) -> None:
        assert self._key is not None
        if stamp is None or not stamp.isdigit() or len(stamp) > 12:
            raise Refused(401, "X-Breachbook-Timestamp: missing or not Unix seconds")
        now = self._now()
        if abs(now - int(stamp)) > self._window:
            raise Refused(401, f"X-Breachbook-Timestamp: outside the {self._window} s window")
        expected = hmac.new(self._key, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature.encode(), f"sha256={expected}".encode()):
            raise Refused(401, "X-Breachbook-Signature: does not match the body")
        self._seen = {s: t for s, t in self._seen.items() if now - t <= self._window}
        if expected in self._seen:
            raise Refused(409, "X-Breachbook-Signature: already used (a replay)")
        self._seen[expected] = now


def sign(key: str, body: bytes, stamp: int) -> dict[str, str]:
    """The headers a signing sender adds (for senders written in Python, and the tests)."""
    digest = hmac.new(key.encode(), str(stamp).encode() + b"." + body, hashlib.sha256)
    return {
        "X-Breachbook-Timestamp": str(stamp),
        "X-Breachbook-Signature": f"sha256={digest.hexdigest()}",
    }


def _parse(model: type[BaseModel], body: Any) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise Refused(422, describe_validation_error(exc)) from None


class Receiver:
    """The ASGI app (`.app`) and the work it starts in the background."""

    def __init__(
        self,
        rules: AlertRules,
        book: AlertBook,
        starter: Starter,
        auth: Auth,
        retries: Sequence[float] = START_RETRIES,
        contain: Callable[[StartRequest], str] | None = None,
    ) -> None:
        """`contain`, when given, runs a request's first phase in this process at once
        (breachbook.containment), beside the start of the whole run, where its rule asks."""
        self.contain = contain
        self.rules = rules
        self.book = book
        self.starter = starter
        self.auth = auth
        self.retries = retries
        self._tasks: set[asyncio.Task[None]] = set()
        self.app = Starlette(
            routes=[
                Route("/alerts/{source}", self.receive, methods=["POST"]),
                Route("/healthz", self.health, methods=["GET"]),
            ],
            lifespan=self._lifespan,
        )

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        await self.resume_unstarted()
        yield

    async def health(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "starting": len(self._tasks)})

    async def resume_unstarted(self) -> None:
        for taken in await run_in_threadpool(self.book.unstarted):
            self._start_later(taken)

    async def receive(self, request: Request) -> JSONResponse:
        try:
            taken = await self._receive(request)
        except Refused as refused:
            return JSONResponse({"error": str(refused)}, status_code=refused.status)
        for item in taken:
            if item.request is not None:
                self._start_later(item)
        return JSONResponse({"accepted": [t.answer() for t in taken]}, status_code=202)

    async def _receive(self, request: Request) -> list[Taken]:
        source = request.path_params["source"]
        if source not in {s.value for s in Source}:
            raise Refused(
                404, f"/alerts/{source}: the senders are alertmanager, guardduty, generic"
            )
        body = await _read_body(request)
        self.auth.check(request.headers, body)
        try:
            parsed = json.loads(body)
        except (ValueError, RecursionError):
            raise Refused(400, "body: not JSON") from None
        if depth_of(parsed) > MAX_DEPTH:
            raise Refused(400, f"body: nested deeper than {MAX_DEPTH}")
        try:
            alerts = self._alerts(Source(source), parsed)
            rules = [(alert, self.rules.rule_for(alert)) for alert in alerts]
            return await run_in_threadpool(self._take_all, rules)
        except AlertError as exc:
            raise Refused(422, str(exc)) from None

    def _take_all(self, alerts: list[tuple[Alert, Rule | None]]) -> list[Taken]:
        return [self.book.take(alert, rule) for alert, rule in alerts]

    def _alerts(self, source: Source, parsed: Any) -> list[Alert]:
        if source is Source.ALERTMANAGER:
            return from_alertmanager(_parse(AlertmanagerWebhook, parsed))
        if source is Source.GUARDDUTY:
            return from_guardduty(_parse(GuardDutyEvent, parsed))
        if self.rules.generic is None:
            raise Refused(404, "/alerts/generic: no generic mapping in the rules file")
        return from_generic(parsed, self.rules.generic, datetime.now(UTC))

    def _start_later(self, taken: Taken) -> None:
        work = [self._start(taken)]
        if self.contain is not None and taken.request and taken.request.contain_at_once:
            work.append(self._contain(taken.request))
        for item in work:
            task = asyncio.get_running_loop().create_task(item)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _contain(self, request: StartRequest) -> None:
        assert self.contain is not None
        try:
            run = await run_in_threadpool(self.contain, request)
        except Exception as exc:  # the served run contains too: this is the head start
            message = str(exc) if isinstance(exc, BreachbookError) else type(exc).__name__
            log.error("incident %s: containment here failed (%s)", request.incident_id, message)
            return
        log.info("incident %s: contained by run %s", request.incident_id, run)

    async def _start(self, taken: Taken) -> None:
        assert taken.request is not None
        reason = "not tried"
        for delay in (0.0, *self.retries):
            await asyncio.sleep(delay)
            try:
                run = await self.starter.start(taken.request)
            except Exception as exc:  # any failure to start is retried, then recorded
                reason = f"{type(exc).__name__}: {str(exc)[:200]}"
                log.warning("run for %s not started (%s); retrying", taken.incident_id, reason)
                continue
            await run_in_threadpool(self.book.started, taken, run)
            log.info("incident %s: run %s started", taken.incident_id, run)
            return
        await run_in_threadpool(self.book.not_started, taken, reason)
        log.error("incident %s: no run started after retries (%s)", taken.incident_id, reason)

    async def drain(self) -> None:
        """Wait for the runs being started (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
        raise Refused(413, f"body: more than {MAX_BODY} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise Refused(413, f"body: more than {MAX_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def build_receiver(
    settings: Settings,
    starter: Starter,
    contain: Callable[[StartRequest], str] | None = None,
) -> Receiver:
    """The receiver the settings describe: rules file, LIVE ledger, signing key, auth."""
    if settings.alert_rules is None:
        raise BreachbookError("the alert receiver needs BREACHBOOK_ALERT_RULES (a rules file)")
    rules = AlertRules.load(settings.alert_rules)
    auth = Auth(
        settings.alert_token.get_secret_value() if settings.alert_token else None,
        settings.alert_hmac_key.get_secret_value() if settings.alert_hmac_key else None,
        settings.alert_replay_seconds,
    )
    ledger = Ledger(live_ledger_url(settings), SystemClock())
    book = AlertBook(ledger, Anchoring.from_settings(settings), incidents_dir(settings))
    return Receiver(rules, book, starter, auth, contain=contain)
