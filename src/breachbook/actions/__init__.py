"""The action registry. Importing this package registers the built-in actions."""

from breachbook.actions import communicate, contain, http, notify, post, preserve
from breachbook.actions.base import Action, ActionArgs, Prepared, register, registry

__all__ = [
    "Action",
    "ActionArgs",
    "Prepared",
    "communicate",
    "contain",
    "http",
    "notify",
    "post",
    "preserve",
    "register",
    "registry",
]
