"""Contain: isolate the source. Each target is one role, key, host or network."""

from __future__ import annotations

from ipaddress import ip_network
from typing import Annotated, Any

from pydantic import Field, field_validator

from breachbook.actions.base import Action, ActionArgs, register, require
from breachbook.context import RunContext
from breachbook.ports import Check, not_configured

DB_SETTING = "BREACHBOOK_DATABASE_ADMIN_URL"
CLOUD_SETTING = "BREACHBOOK_AWS_REGION and AWS credentials"


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


@register
class LockDatabaseRole(Action[RoleArgs]):
    name = "database.lock_role"
    summary = "Lock the database role used in the breach so it can no longer log in."
    changes = "ALTER ROLE ... NOLOGIN on the production database"
    args_model = RoleArgs

    def targets(self, args: RoleArgs, ctx: RunContext) -> list[str]:
        return [args.role]

    def preflight(self, args: RoleArgs, target: str, ctx: RunContext) -> Check:
        db = ctx.connectors.database
        return (
            not_configured("database admin", DB_SETTING)
            if db is None
            else db.check_lock_role(target)
        )

    def would(self, args: RoleArgs, target: str, ctx: RunContext) -> str:
        return f"lock database role {target} (NOLOGIN)"

    def apply(self, args: RoleArgs, target: str, ctx: RunContext) -> dict[str, Any]:
        return dict(
            require(ctx.connectors.database, "database admin", DB_SETTING).lock_role(target)
        )


@register
class EndDatabaseSessions(Action[RoleArgs]):
    name = "database.end_sessions"
    summary = "End every open session of the database role."
    changes = "pg_terminate_backend for each session of the role"
    args_model = RoleArgs

    def targets(self, args: RoleArgs, ctx: RunContext) -> list[str]:
        return [args.role]

    def preflight(self, args: RoleArgs, target: str, ctx: RunContext) -> Check:
        db = ctx.connectors.database
        return (
            not_configured("database admin", DB_SETTING)
            if db is None
            else db.check_end_sessions(target)
        )

    def would(self, args: RoleArgs, target: str, ctx: RunContext) -> str:
        return f"end all sessions of database role {target}"

    def apply(self, args: RoleArgs, target: str, ctx: RunContext) -> dict[str, Any]:
        return dict(
            require(ctx.connectors.database, "database admin", DB_SETTING).end_sessions(target)
        )


@register
class DeactivateAccessKeys(Action[KeysArgs]):
    name = "cloud.deactivate_access_keys"
    summary = "Deactivate leaked cloud access keys."
    changes = "IAM UpdateAccessKey Status=Inactive"
    args_model = KeysArgs

    def targets(self, args: KeysArgs, ctx: RunContext) -> list[str]:
        return list(args.access_key_ids)

    def preflight(self, args: KeysArgs, target: str, ctx: RunContext) -> Check:
        cloud = ctx.connectors.cloud
        return (
            not_configured("cloud", CLOUD_SETTING)
            if cloud is None
            else cloud.check_deactivate_key(target)
        )

    def would(self, args: KeysArgs, target: str, ctx: RunContext) -> str:
        return f"deactivate access key {target}"

    def apply(self, args: KeysArgs, target: str, ctx: RunContext) -> dict[str, Any]:
        return dict(require(ctx.connectors.cloud, "cloud", CLOUD_SETTING).deactivate_key(target))


@register
class QuarantineHosts(Action[HostsArgs]):
    name = "cloud.quarantine_hosts"
    summary = "Move compromised hosts into a quarantine security group, keeping them for forensics."
    changes = "EC2 ModifyInstanceAttribute Groups=[quarantine]"
    args_model = HostsArgs

    def targets(self, args: HostsArgs, ctx: RunContext) -> list[str]:
        return list(args.hosts)

    def preflight(self, args: HostsArgs, target: str, ctx: RunContext) -> Check:
        cloud = ctx.connectors.cloud
        return (
            not_configured("cloud", CLOUD_SETTING)
            if cloud is None
            else cloud.check_quarantine_host(target)
        )

    def would(self, args: HostsArgs, target: str, ctx: RunContext) -> str:
        return f"quarantine host {target}"

    def apply(self, args: HostsArgs, target: str, ctx: RunContext) -> dict[str, Any]:
        return dict(require(ctx.connectors.cloud, "cloud", CLOUD_SETTING).quarantine_host(target))


@register
class BlockAddresses(Action[AddressesArgs]):
    name = "network.block_addresses"
    summary = "Deny traffic from the attacker's addresses at the network edge."
    changes = "EC2 CreateNetworkAclEntry RuleAction=deny"
    args_model = AddressesArgs

    def targets(self, args: AddressesArgs, ctx: RunContext) -> list[str]:
        return list(args.addresses)

    def preflight(self, args: AddressesArgs, target: str, ctx: RunContext) -> Check:
        cloud = ctx.connectors.cloud
        return (
            not_configured("cloud", CLOUD_SETTING)
            if cloud is None
            else cloud.check_block_address(target)
        )

    def would(self, args: AddressesArgs, target: str, ctx: RunContext) -> str:
        return f"deny inbound and outbound traffic for {target}"

    def apply(self, args: AddressesArgs, target: str, ctx: RunContext) -> dict[str, Any]:
        return dict(require(ctx.connectors.cloud, "cloud", CLOUD_SETTING).block_address(target))
