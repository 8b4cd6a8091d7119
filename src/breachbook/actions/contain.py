"""Contain: isolate the source. Each target is one role, key, host or network, and each
action is one typed call on the database-admin or cloud port: a read-only check, the change
(which reports the prior state) and, where it can be reversed, the undo."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from ipaddress import ip_network
from typing import Annotated, Any, ClassVar, Generic, TypeVar

from pydantic import Field, field_validator

from breachbook.actions.base import (
    Action,
    ActionArgs,
    ArgsT,
    NotReversible,
    register,
    require,
)
from breachbook.context import Connectors, RunContext
from breachbook.models import MAX_TARGETS, ExposedTable
from breachbook.ports import Changed, Check, Cloud, DatabaseAdmin, not_configured

DB_SETTING = "set BREACHBOOK_DATABASE_ADMIN_URL"
CLOUD_SETTING = "set BREACHBOOK_AWS_REGION"

Name = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=63)]
TableName = Annotated[
    str, Field(pattern=r"^([A-Za-z_][A-Za-z0-9_]*\.)?[A-Za-z_][A-Za-z0-9_]*$", max_length=127)
]
"""`name` or `schema.name`."""


class RoleArgs(ActionArgs):
    role: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_$-]{0,62}$")]


class LockRoleArgs(RoleArgs):
    connection_limit: Annotated[int, Field(ge=0)] | None = None
    """Also lower the role's connection limit (0: no new session even if login comes back)."""


class PrivilegesArgs(RoleArgs):
    tables: list[ExposedTable | TableName] = Field(default=[], max_length=MAX_TARGETS)
    """Tables as the incident names them (`exposed_tables`), or `name` / `schema.name`."""
    schemas: list[Name] = Field(default=[], max_length=MAX_TARGETS)


class KeysArgs(ActionArgs):
    access_key_ids: list[Annotated[str, Field(pattern=r"^[A-Z0-9]{16,128}$")]]


class UsersArgs(ActionArgs):
    users: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9+=,.@_-]{1,64}$")]] = Field(
        max_length=MAX_TARGETS
    )
    """IAM user names: every active access key of each is deactivated."""


class HostsArgs(ActionArgs):
    hosts: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]]


class PrincipalsArgs(ActionArgs):
    principals: list[Annotated[str, Field(pattern=r"^(user|role)/[A-Za-z0-9+=,.@_-]{1,64}$")]] = (
        Field(max_length=MAX_TARGETS)
    )
    """IAM users and roles as `user/NAME` or `role/NAME`."""


class AddressesArgs(ActionArgs):
    addresses: list[str]

    @field_validator("addresses")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        return [str(ip_network(item, strict=False)) for item in value]


PortT = TypeVar("PortT")


class PortCall(Action[ArgsT], Generic[ArgsT, PortT]):
    """Per target: a check, a change and an undo on one port, each a typed method call."""

    port_label: ClassVar[str]
    setting: ClassVar[str]
    would_text: ClassVar[str]

    @abstractmethod
    def port(self, connectors: Connectors) -> PortT | None: ...

    @abstractmethod
    def check(self, port: PortT, args: ArgsT, target: str) -> Check: ...

    @abstractmethod
    def change(self, port: PortT, args: ArgsT, target: str) -> Changed: ...

    def revert(self, port: PortT, target: str, prior: Mapping[str, Any]) -> Changed:
        raise NotReversible(f"{self.name} cannot be undone")

    def preflight(self, args: ArgsT, target: str, ctx: RunContext) -> Check:
        port = self.port(ctx.connectors)
        return (
            not_configured(self.port_label, self.setting)
            if port is None
            else self.check(port, args, target)
        )

    def would(self, args: ArgsT, target: str, ctx: RunContext) -> str:
        return self.would_text.format(target=target)

    def apply(self, args: ArgsT, target: str, ctx: RunContext) -> Changed:
        return self.change(
            require(self.port(ctx.connectors), self.port_label, self.setting), args, target
        )

    def undo(self, target: str, prior: Mapping[str, Any], connectors: Connectors) -> Changed:
        port = require(self.port(connectors), self.port_label, self.setting)
        return self.revert(port, target, prior)


class DatabaseCall(PortCall[ArgsT, DatabaseAdmin]):
    port_label, setting = "database admin", DB_SETTING

    def port(self, connectors: Connectors) -> DatabaseAdmin | None:
        return connectors.database


class CloudCall(PortCall[ArgsT, Cloud]):
    port_label, setting = "cloud", CLOUD_SETTING

    def port(self, connectors: Connectors) -> Cloud | None:
        return connectors.cloud


@register
class LockDatabaseRole(DatabaseCall[LockRoleArgs]):
    name = "database.lock_role"
    summary = "Lock the database role used in the breach so it can no longer log in."
    changes = "ALTER ROLE ... NOLOGIN [CONNECTION LIMIT n] on the production database"
    args_model = LockRoleArgs
    reversible = True
    would_text = "lock database role {target} (NOLOGIN)"

    def targets(self, args: LockRoleArgs, ctx: RunContext) -> list[str]:
        return [args.role]

    def would(self, args: LockRoleArgs, target: str, ctx: RunContext) -> str:
        limit = args.connection_limit
        more = "" if limit is None else f", connection limit {limit}"
        return f"lock database role {target} (NOLOGIN{more})"

    def check(self, port: DatabaseAdmin, args: LockRoleArgs, target: str) -> Check:
        return port.check_lock_role(target)

    def change(self, port: DatabaseAdmin, args: LockRoleArgs, target: str) -> Changed:
        return port.lock_role(target, args.connection_limit)

    def revert(self, port: DatabaseAdmin, target: str, prior: Mapping[str, Any]) -> Changed:
        return port.restore_role(target, prior)


@register
class EndDatabaseSessions(DatabaseCall[RoleArgs]):
    name = "database.end_sessions"
    summary = "End every open session of the database role."
    changes = "pg_terminate_backend for each session of the role"
    args_model = RoleArgs
    would_text = "end all sessions of database role {target}"

    def targets(self, args: RoleArgs, ctx: RunContext) -> list[str]:
        return [args.role]

    def check(self, port: DatabaseAdmin, args: RoleArgs, target: str) -> Check:
        return port.check_end_sessions(target)

    def change(self, port: DatabaseAdmin, args: RoleArgs, target: str) -> Changed:
        return port.end_sessions(target)


@register
class RevokeDatabasePrivileges(DatabaseCall[PrivilegesArgs]):
    name = "database.revoke_privileges"
    summary = "Revoke the database role's privileges on the exposed tables or schemas."
    changes = "REVOKE ALL ON TABLE / SCHEMA ... FROM the role"
    args_model = PrivilegesArgs
    reversible = True
    would_text = "revoke every privilege on {target}"

    def targets(self, args: PrivilegesArgs, ctx: RunContext) -> list[str]:
        tables = [t.table if isinstance(t, ExposedTable) else t for t in args.tables]
        return [f"table:{t}" for t in tables] + [f"schema:{s}" for s in args.schemas]

    def would(self, args: PrivilegesArgs, target: str, ctx: RunContext) -> str:
        return f"revoke every privilege of database role {args.role} on {target}"

    def check(self, port: DatabaseAdmin, args: PrivilegesArgs, target: str) -> Check:
        return port.check_revoke_privileges(args.role, target)

    def change(self, port: DatabaseAdmin, args: PrivilegesArgs, target: str) -> Changed:
        return port.revoke_privileges(args.role, target)

    def revert(self, port: DatabaseAdmin, target: str, prior: Mapping[str, Any]) -> Changed:
        return port.restore_privileges(str(prior["role"]), target, prior)


@register
class DeactivateAccessKeys(CloudCall[KeysArgs]):
    name = "cloud.deactivate_access_keys"
    summary = "Deactivate leaked cloud access keys."
    changes = "IAM UpdateAccessKey Status=Inactive"
    args_model = KeysArgs
    reversible = True
    would_text = "deactivate access key {target}"

    def targets(self, args: KeysArgs, ctx: RunContext) -> list[str]:
        return list(args.access_key_ids)

    def check(self, port: Cloud, args: KeysArgs, target: str) -> Check:
        return port.check_deactivate_key(target)

    def change(self, port: Cloud, args: KeysArgs, target: str) -> Changed:
        return port.deactivate_key(target)

    def revert(self, port: Cloud, target: str, prior: Mapping[str, Any]) -> Changed:
        return port.reactivate_key(target, prior)


@register
class DeactivateUserKeys(CloudCall[UsersArgs]):
    name = "cloud.deactivate_user_keys"
    summary = "Deactivate every active access key of IAM users whose keys leaked."
    changes = "IAM UpdateAccessKey Status=Inactive for each active key of the user"
    args_model = UsersArgs
    reversible = True
    would_text = "deactivate every active access key of IAM user {target}"

    def targets(self, args: UsersArgs, ctx: RunContext) -> list[str]:
        return list(args.users)

    def check(self, port: Cloud, args: UsersArgs, target: str) -> Check:
        return port.check_deactivate_user_keys(target)

    def change(self, port: Cloud, args: UsersArgs, target: str) -> Changed:
        return port.deactivate_user_keys(target)

    def revert(self, port: Cloud, target: str, prior: Mapping[str, Any]) -> Changed:
        return port.reactivate_user_keys(target, prior)


@register
class QuarantineHosts(CloudCall[HostsArgs]):
    name = "cloud.quarantine_hosts"
    summary = "Move compromised hosts into a quarantine security group, keeping them for forensics."
    changes = "EC2 ModifyInstanceAttribute Groups=[quarantine]"
    args_model = HostsArgs
    reversible = True
    would_text = "quarantine host {target}"

    def targets(self, args: HostsArgs, ctx: RunContext) -> list[str]:
        return list(args.hosts)

    def check(self, port: Cloud, args: HostsArgs, target: str) -> Check:
        return port.check_quarantine_host(target)

    def change(self, port: Cloud, args: HostsArgs, target: str) -> Changed:
        return port.quarantine_host(target)

    def revert(self, port: Cloud, target: str, prior: Mapping[str, Any]) -> Changed:
        return port.release_host(target, prior)


@register
class BlockAddresses(CloudCall[AddressesArgs]):
    name = "network.block_addresses"
    summary = "Deny traffic from the attacker's addresses at the network edge."
    changes = "EC2 CreateNetworkAclEntry RuleAction=deny"
    args_model = AddressesArgs
    reversible = True
    would_text = "deny inbound and outbound traffic for {target}"

    def targets(self, args: AddressesArgs, ctx: RunContext) -> list[str]:
        return list(args.addresses)

    def check(self, port: Cloud, args: AddressesArgs, target: str) -> Check:
        return port.check_block_address(target)

    def change(self, port: Cloud, args: AddressesArgs, target: str) -> Changed:
        return port.block_address(target)

    def revert(self, port: Cloud, target: str, prior: Mapping[str, Any]) -> Changed:
        return port.unblock_address(target, prior)


@register
class DenyPrincipals(CloudCall[PrincipalsArgs]):
    name = "cloud.deny_principals"
    summary = "Attach an explicit deny-all inline policy to IAM users or roles."
    changes = "IAM PutUserPolicy / PutRolePolicy breachbook-deny-all (Deny * on *)"
    args_model = PrincipalsArgs
    reversible = True
    would_text = "attach the deny-all inline policy to {target}"

    def targets(self, args: PrincipalsArgs, ctx: RunContext) -> list[str]:
        return list(args.principals)

    def check(self, port: Cloud, args: PrincipalsArgs, target: str) -> Check:
        return port.check_deny_principal(target)

    def change(self, port: Cloud, args: PrincipalsArgs, target: str) -> Changed:
        return port.deny_principal(target)

    def revert(self, port: Cloud, target: str, prior: Mapping[str, Any]) -> Changed:
        return port.allow_principal(target, prior)
