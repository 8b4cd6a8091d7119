"""The three ways a playbook runs. Only `breachbook.wiring` decides what a mode means."""

from enum import StrEnum


class Mode(StrEnum):
    LIVE = "live"
    DRILL = "drill"
    TABLETOP = "tabletop"
