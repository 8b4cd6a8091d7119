"""Which GDPR supervisory authority a notice goes to: the one-stop shop (GDPR Art. 56).

A controller established in the EEA notifies the lead authority: the authority of its main
establishment (its place of central administration, Art. 4(16)), or of its only one there.
A controller with no establishment in the EEA has no lead authority (Art. 3(2); EDPB
Guidelines 9/2022 para. 73) and notifies every authority of a member state where affected
people live. The authorities' names are the EDPB's members
(https://www.edpb.europa.eu/about-edpb/about-edpb/members_en); an establishment may name its
own (Germany's authorities are per Land, for instance).
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel

from breachbook.models import Organisation

EEA_AUTHORITIES: dict[str, str] = {
    "AT": "Datenschutzbehörde (Austria)",
    "BE": "Autorité de protection des données / Gegevensbeschermingsautoriteit (Belgium)",
    "BG": "Commission for Personal Data Protection (Bulgaria)",
    "HR": "Agencija za zaštitu osobnih podataka (Croatia)",
    "CY": "Commissioner for Personal Data Protection (Cyprus)",
    "CZ": "Úřad pro ochranu osobních údajů (Czech Republic)",
    "DK": "Datatilsynet (Denmark)",
    "EE": "Andmekaitse Inspektsioon (Estonia)",
    "FI": "Tietosuojavaltuutetun toimisto (Finland)",
    "FR": "Commission Nationale de l'Informatique et des Libertés (France)",
    "DE": "Der Bundesbeauftragte für den Datenschutz und die Informationsfreiheit, or the "
    "authority of the Land (Germany)",
    "GR": "Hellenic Data Protection Authority (Greece)",
    "HU": "Nemzeti Adatvédelmi és Információszabadság Hatóság (Hungary)",
    "IE": "Data Protection Commission (Ireland)",
    "IT": "Garante per la protezione dei dati personali (Italy)",
    "LV": "Datu valsts inspekcija (Latvia)",
    "LT": "Valstybinė duomenų apsaugos inspekcija (Lithuania)",
    "LU": "Commission nationale pour la protection des données (Luxembourg)",
    "MT": "Information and Data Protection Commissioner (Malta)",
    "NL": "Autoriteit Persoonsgegevens (Netherlands)",
    "PL": "Urząd Ochrony Danych Osobowych (Poland)",
    "PT": "Comissão Nacional de Proteção de Dados (Portugal)",
    "RO": "Autoritatea Națională de Supraveghere a Prelucrării Datelor cu Caracter Personal (Romania)",
    "SK": "Úrad na ochranu osobných údajov (Slovakia)",
    "SI": "Informacijski pooblaščenec (Slovenia)",
    "ES": "Agencia Española de Protección de Datos (Spain)",
    "SE": "Integritetsskyddsmyndigheten (Sweden)",
    "IS": "Persónuvernd (Iceland)",
    "LI": "Datenschutzstelle (Liechtenstein)",
    "NO": "Datatilsynet (Norway)",
}


class Addressees(BaseModel):
    """Who a GDPR Art. 33 notice goes to, and why those."""

    authorities: list[str]
    lead: bool
    reason: str


def gdpr_addressees(org: Organisation, countries: Iterable[str]) -> Addressees:
    """The lead authority from the organisation's establishments, or every authority of an
    EEA country in `countries` (where affected people live) when it has none in the EEA."""
    in_eea = [e for e in org.establishments if e.country in EEA_AUTHORITIES]
    main = [e for e in in_eea if e.main]
    if len(main) > 1:
        raise ValueError(
            "organisation.establishments: more than one main establishment in the EEA "
            f"({', '.join(e.country for e in main)}); GDPR Art. 4(16) allows one"
        )
    chosen = main[0] if main else (in_eea[0] if len(in_eea) == 1 else None)
    if chosen is not None:
        how = "main establishment" if main else "only establishment in the EEA"
        return Addressees(
            authorities=[chosen.authority or EEA_AUTHORITIES[chosen.country]],
            lead=True,
            reason=f"lead supervisory authority (GDPR Art. 56): {how}, {chosen.name} "
            f"({chosen.country})",
        )
    if in_eea:
        raise ValueError(
            "organisation.establishments: several establishments in the EEA and none marked "
            "main: true; the lead authority is the main establishment's (GDPR Art. 56)"
        )
    places = sorted({c for c in countries if c in EEA_AUTHORITIES})
    return Addressees(
        authorities=[EEA_AUTHORITIES[c] for c in places],
        lead=False,
        reason="no establishment in the EEA, so no one-stop shop (GDPR Art. 3(2), 56): every "
        "authority of a member state where affected people live (" + ", ".join(places) + ")",
    )
