"""What a regulator notice says, gathered so that it can be filed as drafted.

GDPR Art. 33(3) asks for (a) the nature of the breach with the categories and approximate
numbers of data subjects and of personal data records, (b) the DPO's contact, (c) the likely
consequences and (d) the measures taken or proposed; Art. 33(1) the reasons for a delay past
72 hours; Art. 33(4) allows the information in phases. PIPL Art. 57 asks for the kinds of
information, cause and possible harm, the remedial measures and what individuals can do, and
a contact, in Chinese for the CAC. Cal. Civ. Code 1798.82(f) asks for a sample copy of the
residents' notice. Each notice says whether and when the individuals were told, from the
ledger's deliveries, never from the plan. What cannot be filled is a problem of the draft,
named in the plan, not a placeholder in the text.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from breachbook.authorities import gdpr_addressees
from breachbook.deadlines import Deliveries
from breachbook.inputs import LABELS, read_yaml
from breachbook.models import Customer, DataCategory, Incident, Organisation, base_language
from breachbook.notify import Assessment, LetterWriter, Tally, obligation_record
from breachbook.register import Filing, Phase, next_phase
from breachbook.rules import Rule, RuleBook
from breachbook.templates import Renderer

NOTICE_LABELS = "regulators/category-labels.yaml"
SAMPLE_ID = "SAMPLE"


class NoticeDraft(BaseModel):
    """One drafted notice, kept as a run record: which phase, where, and what it lacks."""

    rule_id: str
    phase: Phase
    document: str
    problems: list[str] = Field(default_factory=list)


def label(labels: dict[str, dict[str, str]], category: str, language: str) -> str:
    for key in (language, base_language(language), "en"):
        table = labels.get(key) or {}
        if category in table:
            return table[category]
    return category.replace("_", " ")


PHASE_WORDS = {
    "initial": "Initial notification: the investigation continues and information will be "
    "provided in phases as it is established.",
    "follow-up": "Follow-up notification, completing the initial one; further information "
    "will follow in phases.",
    "final": "Final notification: the investigation is complete.",
}


class NoticeWriter:
    """The fields of each regulator notice of one incident, and what each lacks."""

    def __init__(
        self, renderer: Renderer, org: Organisation, rules: RuleBook, incident: Incident
    ) -> None:
        self.renderer = renderer
        self.org = org
        self.rules = rules
        self.incident = incident
        loaded = read_yaml(renderer.templates_dir / NOTICE_LABELS, LABELS)
        self.labels: dict[str, dict[str, str]] = loaded if isinstance(loaded, dict) else {}

    def _individuals(
        self, found: Assessment, tally: Tally, sent: dict[str, Deliveries]
    ) -> dict[str, Any]:
        """Whether and when the people in this notice's places were told, from the ledger."""
        places = set(tally.by_jurisdiction)
        related = [t for t in found.individual.values() if places & set(t.by_jurisdiction)]
        owed = []
        for other in sorted(related, key=lambda t: t.rule_id):
            done = sent.get(other.rule_id)
            owed.append(
                {
                    "rule_id": other.rule_id,
                    "citation": self.rules.rule(other.rule_id).citation,
                    "owed": other.count,
                    "delivered": done.delivered if done else 0,
                    "last_delivered_at": done.last.isoformat() if done and done.last else None,
                }
            )
        countries = {p.split("-")[0] for p in places}
        why_not = []
        for rule_id, reason in found.not_owed.items():
            rule = self.rules.rule(rule_id)
            if rule.audience == "individual" and self.rules.expand(rule.applies_to) & (
                places | countries
            ):
                why_not.append({"rule_id": rule_id, "reason": reason})
        return {"owed": owed, "not_owed": why_not}

    def sample_letter(self, found: Assessment, rule: Rule, now: datetime) -> str | None:
        """A sample copy of the letter whose delivery starts this rule's clock, with
        placeholders for everything personal (Cal. Civ. Code 1798.82(f))."""
        other = rule.after
        tally = found.individual.get(other) if other else None
        if other is None or tally is None:
            return None
        letter_rule = self.rules.rule(other)
        assert letter_rule.letter is not None
        place = sorted(tally.by_jurisdiction)[0]
        country, _, region = place.partition("-")
        sample = Customer(
            id=SAMPLE_ID,
            full_name="[Resident's name]",
            email="resident@example.com",
            phone="[phone]",
            street="[Street address]",
            city="[City]",
            postal_code="[ZIP]",
            region=region,
            country=country,
            locale=letter_rule.letter.default_locale,
            categories=frozenset(DataCategory(c) for c in tally.categories),
        )
        writer = LetterWriter(self.renderer, self.org, self.incident, now)
        subject, body = writer.render(sample, letter_rule, sample.categories)
        return f"Subject: {subject}\n\n{body}"

    def context(
        self,
        found: Assessment,
        rule: Rule,
        now: datetime,
        fulfilled: dict[str, datetime],
        sent: dict[str, Deliveries],
        filed: list[Filing],
        base: dict[str, Any],
    ) -> tuple[dict[str, Any], list[str]]:
        """The fields of one regulator notice and what it lacks to be filed."""
        incident = self.incident
        tally = found.regulator[rule.id]
        problems: list[str] = []
        language = rule.notice_language
        texts = incident.texts_in(language)
        if texts is None:
            texts = incident.texts_in(incident.language)
            assert texts is not None
            problems.append(
                f"the incident texts have no '{language}' translation: the notice quotes them "
                f"in '{incident.language}' (add translations.{language} to the incident file)"
            )
        categories = [
            {
                "key": c.value,
                "label": label(self.labels, c.value, language),
                "people": tally.categories[c.value],
            }
            for c in DataCategory
            if c.value in tally.categories
        ]
        record = obligation_record(tally, rule, incident, now, fulfilled)
        due = rule.due_at(incident, fulfilled)
        late = due is not None and now > due
        if late and not incident.reasons_for_delay:
            problems.append(
                f"drafted after its due time {record['due']} without the reasons for the "
                "delay: add reasons_for_delay to the incident file (GDPR Art. 33(1))"
            )
        for name, value in (
            ("description", texts.description),
            ("likely_consequences", texts.likely_consequences),
            ("measures_taken", texts.measures_taken),
        ):
            if not value:
                problems.append(f"the incident's {name} is empty: the notice needs it")
        try:
            addressees = gdpr_addressees(self.org, {p.split("-")[0] for p in tally.by_jurisdiction})
        except ValueError as exc:
            problems.append(str(exc))
            addressees = None
        phase = next_phase(filed)
        risk = incident.assessed_risk()
        context = {
            **base,
            "obligation": record,
            "people": tally.count,
            "records": tally.records,
            "categories": categories,
            "texts": texts.model_dump(),
            "individuals": self._individuals(found, tally, sent),
            "late": late,
            "reasons_for_delay": incident.reasons_for_delay,
            "law_enforcement_delay": incident.law_enforcement_delay,
            "phase": phase,
            "phase_words": PHASE_WORDS[phase],
            "filings": [f.model_dump() for f in filed],
            "addressees": addressees.model_dump() if addressees else None,
            "risk": risk.model_dump() if risk else None,
            "mitigation": (
                incident.risk_assessment.mitigation_notes if incident.risk_assessment else ""
            ),
            "sample_letter": self.sample_letter(found, rule, now),
        }
        return context, problems
