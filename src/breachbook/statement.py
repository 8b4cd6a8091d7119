"""The public statement, true by construction: its facts come from the ledger and the
obligations assessment only, and each sentence names the facts it relies on.

A lawyer read an earlier draft that said "we are writing to each of them directly, and we
have informed the data protection authorities" when no letter had gone out and nothing had
been filed. So the templates (templates/statements/<kind>/<language>.md.j2) get no free
text to claim with: only `facts` gathered here (letters delivered are done items of the
delivery action, authorities notified are filings a person recorded with `breachbook filed`,
containment is a step whose every target the ledger shows done) and the incident file's own
texts. Each sentence is written inside `{% call said("fact.id", ...) %}`, which records the
sentence beside the facts it names, so the approver reads, next to the draft, which ledger
entries or records back each sentence. What is not done yet has its own wording: what the
company will do.

Versions are incident-wide ledger records: a re-draft whose text is unchanged keeps its
version; a changed text, or a rejection of the publish step since the last version was
drafted, makes the next one (v2 after a rejection).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from babel.numbers import format_decimal
from pydantic import BaseModel, Field

from breachbook.connectors.ledger_approvals import DECISION
from breachbook.errors import TemplateFieldError
from breachbook.journal import INCIDENT_SCOPE, RunJournal
from breachbook.ledger import ItemStatus
from breachbook.letters import ClaimState, LetterData, StepClaim, babel_locale, long_date
from breachbook.models import Incident, base_language
from breachbook.notify import Assessment
from breachbook.playbook import Playbook
from breachbook.register import filings
from breachbook.rules import RuleBook
from breachbook.templates import Renderer

StatementKind = Literal["holding", "full"]
VERSION = "statement-version"
DELIVERY_ACTIONS = ("letters.deliver",)
"""Actions whose done items are letters that reached a customer (one item per letter)."""
PUBLISH_ACTION = "statement.publish"
ENTRIES_LISTED = 50
"""Ledger entry numbers listed per fact; the count says how many there are in all."""


class Fact(BaseModel):
    """One fact a sentence may rely on: its value and where in the ledger it comes from."""

    id: str
    value: Any
    source: str
    entries: list[int] = Field(default_factory=list)
    """Sequence numbers of the audit entries that record it (the first ENTRIES_LISTED)."""
    entry_count: int = 0


class ExposedScope(BaseModel):
    table: str
    whole: bool
    rows_from: str | None = None
    rows_until: str | None = None


class Notified(BaseModel):
    rule_id: str
    recipient: str
    phase: str
    at: str
    reference: str = ""


class Measure(BaseModel):
    step_id: str
    action: str
    done: bool


class StatementFacts(BaseModel):
    """Everything a statement may say, as the ledger shows it when it is drafted. Counts,
    ids and rule names: no customer's personal data."""

    incident_id: str
    discovered_at: str
    exposure: list[ExposedScope]
    people_known: bool
    """Whether the affected people have been counted (a holding statement may come first)."""
    affected: int = 0
    countries: int = 0
    owed_notice: int = 0
    """Distinct people owed an individual letter by at least one rule."""
    letters_owed: int = 0
    letters_delivered: int = 0
    people_told: int = 0
    """Distinct people owed a letter who have had at least one delivered."""
    authorities_notified: list[Notified] = Field(default_factory=list)
    authorities_to_notify: list[str] = Field(default_factory=list)
    """Recipients of regulator obligations not filed yet (every phase unfiled)."""
    measures: list[Measure] = Field(default_factory=list)
    sources: dict[str, Fact] = Field(default_factory=dict)


def _entries(orders: list[int]) -> tuple[list[int], int]:
    ordered = sorted(orders)
    return ordered[:ENTRIES_LISTED], len(ordered)


def gather(
    journal: RunJournal,
    incident: Incident,
    rules: RuleBook,
    found: Assessment | None,
    claims: list[StepClaim],
) -> StatementFacts:
    """The statement's facts from the ledger (and the run's assessment, when it was made)."""
    sources: dict[str, Fact] = {}

    def fact(fact_id: str, value: Any, source: str, orders: list[int] | None = None) -> None:
        listed, count = _entries(orders or [])
        sources[fact_id] = Fact(
            id=fact_id, value=value, source=source, entries=listed, entry_count=count
        )

    facts_version = len(
        journal.ledger.record_history(journal.incident_id, INCIDENT_SCOPE, "facts", "incident")
    )
    facts_record = f"ledger record facts/incident v{facts_version}"
    fact("incident.discovered_at", incident.discovered_at.isoformat(), facts_record)
    exposure = [
        ExposedScope(
            table=t.table,
            whole=t.rows_from is None and t.rows_until is None,
            rows_from=t.rows_from.isoformat() if t.rows_from else None,
            rows_until=t.rows_until.isoformat() if t.rows_until else None,
        )
        for t in incident.exposed_tables
    ]
    fact(
        "exposure.scope",
        [e.model_dump() for e in exposure],
        f"{facts_record} (exposed_tables: a table without rows_from/rows_until was exposed whole)",
    )
    for name in ("description", "measures_taken", "individual_steps"):
        fact(
            f"incident.{name}",
            getattr(incident, name),
            f"{facts_record} ({name}, as the responder wrote it)",
        )

    out = StatementFacts(
        incident_id=journal.incident_id,
        discovered_at=incident.discovered_at.isoformat(),
        exposure=exposure,
        people_known=found is not None,
    )
    owed_rules = set(found.individual) if found else set()
    told: set[str] = set()
    orders: list[int] = []
    for action in DELIVERY_ACTIONS:
        for item in journal.items(action):
            if item.status is not ItemStatus.DONE:
                continue
            out.letters_delivered += 1
            rule_id, _, customer = item.key.partition("/")
            if rule_id in owed_rules:
                told.add(customer)
            if item.done_order is not None:
                orders.append(item.done_order)
    out.people_told = len(told)
    fact(
        "letters.delivered",
        {"letters": out.letters_delivered, "people": out.people_told},
        f"ledger items of {', '.join(DELIVERY_ACTIONS)} whose latest outcome is done",
        orders,
    )
    filed_rules: set[str] = set()
    for rule_id, records in sorted(filings(journal).items()):
        for filing in records:
            if filing.status != "filed":
                continue
            filed_rules.add(rule_id)
            out.authorities_notified.append(
                Notified(
                    rule_id=rule_id,
                    recipient=rules.rule(rule_id).recipient,
                    phase=filing.phase,
                    at=filing.at,
                    reference=filing.reference,
                )
            )
    fact(
        "authorities.notified",
        [n.model_dump() for n in out.authorities_notified],
        "ledger records filing/RULE/PHASE with status filed (`breachbook filed`)",
    )
    if found is not None:
        assessed = f"ledger record assessment of run {journal.run_id}"
        out.affected = found.affected
        out.countries = len({place.split("-")[0] for place in found.by_jurisdiction})
        out.owed_notice = found.owed_customers
        out.letters_owed = sum(t.count for t in found.individual.values())
        fact("people.affected", {"people": out.affected, "countries": out.countries}, assessed)
        fact(
            "people.owed_notice",
            {
                "people": out.owed_notice,
                "letters": out.letters_owed,
                "rules": sorted(found.individual),
            },
            assessed,
        )
        out.authorities_to_notify = sorted(
            {rules.rule(r).recipient for r in found.regulator if r not in filed_rules}
        )
        fact(
            "authorities.to_notify",
            out.authorities_to_notify,
            f"{assessed} (regulator obligations) less the filed ones",
        )
    done_orders: list[int] = []
    for claim in claims:
        done = claim.state is ClaimState.DONE
        out.measures.append(Measure(step_id=claim.step_id, action=claim.action, done=done))
        if done:
            done_orders += [
                i.done_order for i in journal.items(claim.step_id) if i.done_order is not None
            ]
    fact(
        "containment.done",
        [m.step_id for m in out.measures if m.done],
        "ledger items of each step, every target done",
        done_orders,
    )
    fact(
        "containment.planned",
        [m.step_id for m in out.measures if not m.done],
        "steps the ledger does not show done (failed, waiting, not run, or a drill's plan)",
    )
    out.sources = sources
    return out


# -- rendering ------------------------------------------------------------------------------


class Sentence(BaseModel):
    text: str
    facts: list[str]


class Sentences:
    """The `said` of a template: keeps each sentence with the fact ids it names (which must
    be facts the statement has), and returns the sentence unchanged."""

    def __init__(self, known: dict[str, Fact], template: str, glue: str = " ") -> None:
        self._known = known
        self._template = template
        self._glue = glue
        self.said: list[Sentence] = []

    def __call__(self, *fact_ids: str, caller: Callable[[], str]) -> str:
        unknown = [f for f in fact_ids if f not in self._known]
        if unknown or not fact_ids:
            raise TemplateFieldError(
                f"{self._template}: a sentence names no fact or unknown facts "
                f"({', '.join(unknown) or 'none given'}); known: {', '.join(sorted(self._known))}"
            )
        text = caller()
        if text.strip():
            self.said.append(Sentence(text=self._glue.join(text.split()), facts=list(fact_ids)))
        return text


def plural_for(language: str) -> Callable[[int, str, str], str]:
    """`plural(n, "{n} customer", "{n} customers")` by the language's CLDR plural rule, the
    number written for the language ('10,000'; Chinese has one form)."""
    locale = babel_locale(language)

    def plural(count: int, one: str, other: str) -> str:
        form = one if locale.plural_form(count) == "one" else other
        return form.replace("{n}", format_decimal(count, locale=locale))

    return plural


def render(
    renderer: Renderer,
    template: str,
    language: str,
    facts: StatementFacts,
    base: dict[str, Any],
    claim_data: LetterData,
    incident: Incident,
) -> tuple[str, list[Sentence]]:
    """One language of a statement and the facts behind each of its sentences."""
    said = Sentences(facts.sources, template, glue_for(language))
    texts = incident.texts_in(language) or incident.texts_in(incident.language)
    assert texts is not None

    def measure_text(measure: Measure) -> str:
        claim = claim_data.claim_text(measure.action, language)
        if claim is None:  # pragma: no cover - claims come from claims.yaml's actions
            raise TemplateFieldError(f"no claim text for {measure.action}")
        return claim.done if measure.done else claim.planned

    context = {
        **base,
        "facts": facts.model_dump(),
        "texts": texts.model_dump(),
        "measures_done": [measure_text(m) for m in facts.measures if m.done],
        "measures_planned": [measure_text(m) for m in facts.measures if not m.done],
        "said": said,
        "plural": plural_for(language),
        "number": lambda n: format_decimal(n, locale=babel_locale(language)),
        "date": lambda iso: long_date(datetime.fromisoformat(iso).date(), language),
    }
    return tidy(renderer.render(template, context), language), said.said


UNSPACED = frozenset({"zh", "ja"})
"""Languages written without spaces between words: a paragraph's lines join with nothing."""


def glue_for(language: str) -> str:
    return "" if base_language(language) in UNSPACED else " "


def tidy(body: str, language: str) -> str:
    """Join the lines of each prose paragraph the template spread out (headings and list
    items keep their lines), so the published text reads as written, in any language."""
    glue = glue_for(language)
    out: list[str] = []
    prose: list[str] = []

    def flush() -> None:
        if prose:
            out.append(glue.join(prose))
            prose.clear()

    for line in body.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "- ", "|", "*")):
            flush()
            out.append(line.rstrip())
        else:
            prose.append(stripped)
    flush()
    return "\n".join(out) + "\n"


class LanguageText(BaseModel):
    language: str
    body: str
    sha256: str
    sentences: list[Sentence]

    @property
    def title(self) -> str:
        first = self.body.strip().splitlines()[0] if self.body.strip() else ""
        return first.lstrip("# ").strip()


class Rejection(BaseModel):
    by: str
    at: str
    comment: str = ""


class StatementVersion(BaseModel):
    """One version of a statement, every language, as drafted and kept in the ledger."""

    statement: StatementKind
    version: int
    drafted_at: datetime
    run_id: str
    texts: dict[str, LanguageText]
    facts: StatementFacts
    after_rejection: Rejection | None = None
    decisions_seen: int = 0
    """Decisions on publishing it recorded when it was drafted: later ones are about it."""

    def same_text(self, texts: dict[str, LanguageText]) -> bool:
        return {k: t.sha256 for k, t in self.texts.items()} == {
            k: t.sha256 for k, t in texts.items()
        }


def version_label(version: StatementVersion) -> str:
    """How people and decisions name a version: `full-v2`."""
    return f"{version.statement}-v{version.version}"


def version_digest(version: StatementVersion) -> str:
    """One SHA-256 over every language's text of the version (language, text digest)."""
    joined = "\n".join(f"{k} {t.sha256}" for k, t in sorted(version.texts.items()))
    return hashlib.sha256(joined.encode()).hexdigest()


def text_of(language: str, body: str, sentences: list[Sentence]) -> LanguageText:
    return LanguageText(
        language=language,
        body=body,
        sha256=hashlib.sha256(body.encode()).hexdigest(),
        sentences=sentences,
    )


def publish_steps(playbook: Playbook, statement: StatementKind) -> list[str]:
    """The ids of the steps that publish this statement."""
    return [
        step.id
        for _, step in playbook.ordered_steps()
        if step.action == PUBLISH_ACTION and step.args.get("statement", "full") == statement
    ]


def decisions_of(journal: RunJournal, step_id: str) -> list[dict[str, Any]]:
    """Every decision recorded on a step, oldest first (raw, so a comment is kept)."""
    rows = journal.ledger.record_history(journal.incident_id, INCIDENT_SCOPE, DECISION, step_id)
    return [dict(row.data) for row in rows]


def publish_decisions(
    journal: RunJournal, playbook: Playbook, statement: StatementKind
) -> list[dict[str, Any]]:
    """Every decision on the steps publishing this statement, in the order recorded. Their
    number when a version is drafted tells the decisions since apart from the earlier ones,
    whatever the clocks of the runs and of `breachbook approve` say."""
    return [
        d for step_id in publish_steps(playbook, statement) for d in decisions_of(journal, step_id)
    ]


def _as_rejection(decision: dict[str, Any]) -> Rejection:
    return Rejection(
        by=str(decision.get("by") or "-"),
        at=str(decision.get("at") or "-"),
        comment=str(decision.get("comment") or ""),
    )


def rejection_since(decisions: list[dict[str, Any]], seen: int) -> Rejection | None:
    """A rejection among the decisions recorded after the first `seen`."""
    for decision in decisions[seen:]:
        if decision.get("status") == "denied":
            return _as_rejection(decision)
    return None


def latest_version(journal: RunJournal, statement: StatementKind) -> StatementVersion | None:
    return journal.get(VERSION, statement, StatementVersion, scope=INCIDENT_SCOPE)


def all_versions(journal: RunJournal, statement: StatementKind) -> list[StatementVersion]:
    rows = journal.ledger.record_history(journal.incident_id, INCIDENT_SCOPE, VERSION, statement)
    return [StatementVersion.model_validate(row.data) for row in rows]


def keep_version(
    journal: RunJournal,
    playbook: Playbook,
    statement: StatementKind,
    texts: dict[str, LanguageText],
    facts: StatementFacts,
    now: datetime,
) -> StatementVersion:
    """The version these texts are: the latest when unchanged and not rejected since, else
    a new one, recorded in the ledger (incident-wide) and audited."""
    latest = latest_version(journal, statement)
    decisions = publish_decisions(journal, playbook, statement)
    rejected = rejection_since(decisions, latest.decisions_seen) if latest else None
    if latest is not None and rejected is None and latest.same_text(texts):
        return latest
    version = StatementVersion(
        statement=statement,
        version=latest.version + 1 if latest else 1,
        drafted_at=now,
        run_id=journal.run_id,
        texts=texts,
        facts=facts,
        after_rejection=rejected,
        decisions_seen=len(decisions),
    )
    journal.put(VERSION, statement, version, scope=INCIDENT_SCOPE)
    journal.record(
        "statement",
        f"{statement}/v{version.version}",
        "draft",
        "drafted",
        {
            "languages": sorted(texts),
            "sha256": {k: t.sha256 for k, t in sorted(texts.items())},
            "after_rejection": rejected is not None,
        },
    )
    return version


# -- what the approver reads ---------------------------------------------------------------


def stem(version: StatementVersion) -> str:
    return f"statements/{version.statement}-v{version.version}"


def facts_json(version: StatementVersion) -> dict[str, Any]:
    """sentence -> facts -> ledger entries, per language."""
    sources = version.facts.sources
    return {
        "incident_id": version.facts.incident_id,
        "statement": version.statement,
        "version": version.version,
        "drafted_at": version.drafted_at.isoformat(),
        "after_rejection": version.after_rejection.model_dump()
        if version.after_rejection
        else None,
        "languages": {
            language: {
                "sha256": text.sha256,
                "sentences": [
                    {
                        "text": s.text,
                        "facts": [sources[f].model_dump() for f in s.facts],
                    }
                    for s in text.sentences
                ],
            }
            for language, text in version.texts.items()
        },
    }


def _entries_line(fact: Fact) -> str:
    if not fact.entry_count:
        return ""
    more = (
        f" and {fact.entry_count - len(fact.entries)} more"
        if fact.entry_count > len(fact.entries)
        else ""
    )
    return f"; audit entries #{', #'.join(str(e) for e in fact.entries[:10])}" + (
        f" ... ({fact.entry_count} in all)" if fact.entry_count > 10 else more
    )


def facts_markdown(version: StatementVersion) -> str:
    """Beside the draft, for the approver: each sentence and the facts it relies on."""
    sources = version.facts.sources
    lines = [
        f"# Facts behind the {version.statement} statement, version {version.version}",
        "",
        f"Incident `{version.facts.incident_id}`, drafted {version.drafted_at.isoformat()} "
        f"by run `{version.run_id}`. Every sentence below names the ledger facts it relies on; "
        "what the ledger does not show done is worded as what the company will do.",
    ]
    if version.after_rejection:
        r = version.after_rejection
        lines += [
            "",
            f"Drafted after a rejection by {r.by} at {r.at}: {r.comment or '(no comment)'}",
        ]
    for language, text in version.texts.items():
        lines += ["", f"## {language} (sha256 `{text.sha256[:16]}`)", ""]
        for number, sentence in enumerate(text.sentences, start=1):
            lines.append(f"{number}. {sentence.text}")
            for fact_id in sentence.facts:
                fact = sources[fact_id]
                lines.append(
                    f"   - `{fact_id}` = `{_short(fact.value)}`: {fact.source}{_entries_line(fact)}"
                )
    return "\n".join(lines) + "\n"


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 160 else text[:157] + "..."


def versions_markdown(journal: RunJournal, statement: StatementKind) -> str | None:
    """Every version of a statement with the facts behind it, for a Prefect artifact: the
    texts hold counts, rule names and the incident file's words, never a customer's data."""
    versions = all_versions(journal, statement)
    if not versions:
        return None
    parts = [f"# The {statement} statement: {len(versions)} version(s), latest last", ""]
    for version in versions:
        parts.append(facts_markdown(version).replace("# ", "## ", 1))
        for language, text in version.texts.items():
            parts += [
                f"### v{version.version} text ({language})",
                "",
                "```markdown",
                text.body,
                "```",
                "",
            ]
    return "\n".join(parts)
