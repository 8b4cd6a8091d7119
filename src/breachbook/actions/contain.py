"""Contain: isolate the source. Each target is one role, key, host or network, and each
action is one checked call on the database-admin or cloud port."""

from __future__ import annotations

from ipaddress import ip_network
from typing import Annotated, Any, ClassVar

from pydantic import Field, field_validator

from breachbook.actions.base import Action, ActionArgs, ArgsT, register, require
from breachbook.context import RunContext
from breachbook.ports import Check, not_configured

DB_SETTING = "nothing: no database admin adapter is built in this version"
CLOUD_SETTING = "nothing: no cloud adapter is built in this version"


class RoleArgs(ActionArgs):
    role: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_$-]{0,62}$")]


class KeysArgs(ActionArgs):
    access_key_ids: list[Annotated[str, Field(pattern=r"^[A-Z0-9]{16,128}$")]]


class HostsArgs(ActionArgs):
    hosts: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]]


class AddressesArgs(ActionArgs):
    addresses: list[str]

    @field_validator("addresses")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        return [str(ip_network(item, strict=False)) for item in value]


class PortCall(Action[ArgsT]):
    """An action that is, per target, `check_<operation>` then `<operation>` on one port."""

    port: ClassVar[str]
    port_label: ClassVar[str]
    setting: ClassVar[str]
    operation: ClassVar[str]
    targets_from: ClassVar[str]
    would_text: ClassVar[str]

    def targets(self, args: ArgsT, ctx: RunContext) -> list[str]:
        value = getattr(args, self.targets_from)
        return list(value) if isinstance(value, list) else [value]

    def preflight(self, args: ArgsT, target: str, ctx: RunContext) -> Check:
        port = getattr(ctx.connectors, self.port)
        if port is None:
            return not_configured(self.port_label, self.setting)
        check: Check = getattr(port, f"check_{self.operation}")(target)
        return check

    def would(self, args: ArgsT, target: str, ctx: RunContext) -> str:
        return self.would_text.format(target=target)

    def apply(self, args: ArgsT, target: str, ctx: RunContext) -> dict[str, Any]:
        port = require(getattr(ctx.connectors, self.port), self.port_label, self.setting)
        return dict(getattr(port, self.operation)(target))


@register
class LockDatabaseRole(PortCall[RoleArgs]):
    name = "database.lock_role"
    summary = "Lock the database role used in the breach so it can no longer log in."
    changes = "ALTER ROLE ... NOLOGIN on the production database"
    args_model = RoleArgs
    port, port_label, setting = "database", "database admin", DB_SETTING
    operation, targets_from = "lock_role", "role"
    would_text = "lock database role {target} (NOLOGIN)"


@register
class EndDatabaseSessions(PortCall[RoleArgs]):
    name = "database.end_sessions"
    summary = "End every open session of the database role."
    changes = "pg_terminate_backend for each session of the role"
    args_model = RoleArgs
    port, port_label, setting = "database", "database admin", DB_SETTING
    operation, targets_from = "end_sessions", "role"
    would_text = "end all sessions of database role {target}"


@register
class DeactivateAccessKeys(PortCall[KeysArgs]):
    name = "cloud.deactivate_access_keys"
    summary = "Deactivate leaked cloud access keys."
    changes = "IAM UpdateAccessKey Status=Inactive"
    args_model = KeysArgs
    port, port_label, setting = "cloud", "cloud", CLOUD_SETTING
    operation, targets_from = "deactivate_key", "access_key_ids"
    would_text = "deactivate access key {target}"


@register
class QuarantineHosts(PortCall[HostsArgs]):
    name = "cloud.quarantine_hosts"
    summary = "Move compromised hosts into a quarantine security group, keeping them for forensics."
    changes = "EC2 ModifyInstanceAttribute Groups=[quarantine]"
    args_model = HostsArgs
    port, port_label, setting = "cloud", "cloud", CLOUD_SETTING
    operation, targets_from = "quarantine_host", "hosts"
    would_text = "quarantine host {target}"


@register
class BlockAddresses(PortCall[AddressesArgs]):
    name = "network.block_addresses"
    summary = "Deny traffic from the attacker's addresses at the network edge."
    changes = "EC2 CreateNetworkAclEntry RuleAction=deny"
    args_model = AddressesArgs
    port, port_label, setting = "cloud", "cloud", CLOUD_SETTING
    operation, targets_from = "block_address", "addresses"
    would_text = "deny inbound and outbound traffic for {target}"
