"""The one-step playbook the evidence tests run: only its `with:` block differs between them."""

from __future__ import annotations

import textwrap

HEADER = """\
version: 1
name: {name}
title: Evidence ({name})
organisation:
  legal_name: Example Ltd
  contact:
    phone: "+44 20 7946 0000"
    email: privacy@example.org
    web: https://example.org/incident
    postal: 1 Example Lane, London
  dpo_contact: dpo@example.org
roles: [incident-lead]
war_room:
  channel: "#inc"
  drill_channel: "#inc-drill"
phases:
  - id: preserve
    title: Preserve
    steps:
      - id: snapshot-evidence
        title: Snapshot
        action: evidence.snapshot
        with:
"""


def snapshot_playbook(name: str, with_block: str) -> str:
    """A playbook whose only step snapshots evidence with `with_block` (YAML) as its `with:`."""
    body = textwrap.indent(textwrap.dedent(with_block).strip("\n"), " " * 10)
    return HEADER.format(name=name) + body + "\n"
