"""Containment on AWS (boto3): deactivate access keys, attach a deny-all inline policy to a
user or role, quarantine hosts, deny addresses.

Checks use the APIs' own dry run where AWS honours it (EC2 `DryRun=True`: DryRunOperation
means allowed, UnauthorizedOperation means not) and IAM policy simulation elsewhere; where the
service cannot simulate (moto, or no right to simulate) the check says UNVERIFIED and why.
Each change reads the state it alters first and returns it as the prior state for restore.

Opened `read_only` (a drill), every client carries a `before-send` hook that refuses any
request that is not a read (Describe*, Get*, List*, Simulate*) or a dry run of an operation
known to honour it: moto, for one, applies `CreateNetworkAclEntry` even with DryRun=True.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ProfileNotFound
from botocore.parsers import ResponseParserError

from breachbook.errors import ContainmentRefused, DrillWriteBlocked
from breachbook.ports import Changed, Check

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_ec2.type_defs import InstanceTypeDef, NetworkAclTypeDef
    from mypy_boto3_iam import IAMClient
    from mypy_boto3_sts import STSClient

READ_PREFIXES = ("Describe", "Get", "List", "Simulate")
DRY_RUN_HONOURED = frozenset({"ModifyInstanceAttribute", "CreateSecurityGroup"})
"""Operations whose DryRun=True changes nothing, on AWS and on moto (measured)."""
DRY_RUN = "EC2 DryRun"
SIMULATION = "IAM policy simulation"
QUARANTINE_DESCRIPTION = "breachbook quarantine: no ingress, no egress"
DENY_POLICY = "breachbook-deny-all"
DENY_ALL = json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "*", "Resource": "*"}]}
)
FIRST_ALLOW_FALLBACK = 32766
MAX_RULE = 32766


def refuse_writes(request: Any, **_: Any) -> None:
    """botocore `before-send` hook of a drill: only reads and honoured dry runs go out."""
    body = request.body or b""
    text = body.decode() if isinstance(body, bytes) else str(body)
    form = parse_qs(text)
    action = (form.get("Action") or [""])[0]
    dry_run = (form.get("DryRun") or [""])[0].lower() == "true"
    if action.startswith(READ_PREFIXES) or (dry_run and action in DRY_RUN_HONOURED):
        return
    if not action and request.method in ("GET", "HEAD"):
        return
    raise DrillWriteBlocked(f"drill: refused AWS {action or request.method} (not a read)")


@dataclass(frozen=True)
class AwsConfig:
    region: str
    profile: str | None = None
    endpoint_url: str | None = None
    quarantine_group: str = "breachbook-quarantine"
    rule_base: int = 1
    vpc_id: str | None = None


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "unknown"))


def _refused(operation: str, exc: ClientError) -> ContainmentRefused:
    message = exc.response.get("Error", {}).get("Message", "")
    return ContainmentRefused(f"AWS refused {operation}: {_code(exc)} {message}".strip())


class AwsCloud:
    """The Cloud port on one AWS account and region."""

    def __init__(self, config: AwsConfig, read_only: bool = False) -> None:
        self._config = config
        with _SESSIONS_LOCK:  # a boto3 session is not safe for threads making clients at once
            try:
                session = _session(config.profile, config.region)
                self._make_clients(session, config)
            except ProfileNotFound:
                raise ContainmentRefused(
                    f"BREACHBOOK_AWS_PROFILE: no profile {config.profile!r} in the AWS config files"
                ) from None
            except BotoCoreError as exc:
                raise ContainmentRefused(f"the AWS connector cannot start: {exc}") from None
        if read_only:
            for client in (self.iam, self.ec2, self.sts, self.simulator):
                client.meta.events.register("before-send", refuse_writes)

    def _make_clients(self, session: boto3.Session, config: AwsConfig) -> None:
        client_config = Config(
            retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=30
        )
        self.iam: IAMClient = session.client(
            "iam", endpoint_url=config.endpoint_url, config=client_config
        )
        self.ec2: EC2Client = session.client(
            "ec2", endpoint_url=config.endpoint_url, config=client_config
        )
        self.sts: STSClient = session.client(
            "sts", endpoint_url=config.endpoint_url, config=client_config
        )
        # A simulation that fails leaves the check UNVERIFIED; waiting to retry it gains little.
        self.simulator: IAMClient = session.client(
            "iam",
            endpoint_url=config.endpoint_url,
            config=client_config.merge(Config(retries={"max_attempts": 1, "mode": "standard"})),
        )

    # -- IAM policy simulation ----------------------------------------------------------

    def _simulate(self, action: str, resource: str) -> Check | str:
        """A Check from IAM policy simulation, or the reason it could not be simulated."""
        try:
            caller = self.sts.get_caller_identity()["Arn"]
        except (ClientError, BotoCoreError) as exc:
            return f"the responder's identity is unknown ({type(exc).__name__})"
        principal = _principal_arn(caller)
        if principal.endswith(":root"):
            return Check.verified(
                f"responder is the account's root user: {action} allowed", SIMULATION
            )
        try:
            result = self.simulator.simulate_principal_policy(
                PolicySourceArn=principal, ActionNames=[action], ResourceArns=[resource]
            )
        except ClientError as exc:
            return f"IAM policy simulation refused ({_code(exc)})"
        except (BotoCoreError, ResponseParserError) as exc:
            # moto answers a 500 (NotImplementedError) that botocore cannot parse.
            return f"IAM policy simulation is not available here ({type(exc).__name__})"
        decisions = [r["EvalDecision"] for r in result["EvaluationResults"]]
        if decisions and all(d == "allowed" for d in decisions):
            return Check.verified(f"{action} allowed for {principal}", SIMULATION)
        return Check.failed(
            f"{action} not allowed for {principal} ({', '.join(decisions) or 'no decision'})",
            SIMULATION,
        )

    def _with_permission(self, found: str, action: str, resource: str) -> Check:
        simulated = self._simulate(action, resource)
        if isinstance(simulated, Check):
            return simulated.model_copy(update={"reason": f"{found}; {simulated.reason}"})
        return Check.unverified(f"{found}; permission for {action} not checked: {simulated}")

    # -- access keys ----------------------------------------------------------------------

    def _key(self, access_key_id: str) -> tuple[str, str] | None:
        """The key's user and status, or None if the account has no such key."""
        try:
            user = self.iam.get_access_key_last_used(AccessKeyId=access_key_id).get("UserName")
        except ClientError as exc:
            if _code(exc) in ("NoSuchEntity", "AccessDenied"):
                return None
            raise
        if not user:
            return None
        for page in self.iam.get_paginator("list_access_keys").paginate(UserName=user):
            for key in page["AccessKeyMetadata"]:
                if key.get("AccessKeyId") == access_key_id:
                    return user, str(key.get("Status"))
        return None

    def check_deactivate_key(self, access_key_id: str) -> Check:
        try:
            found = self._key(access_key_id)
            if found is None:
                return Check.failed(
                    f"access key {access_key_id} not found in the account", "IAM read"
                )
            user, status = found
            arn = self.iam.get_user(UserName=user)["User"]["Arn"]
        except ClientError as exc:
            return Check.failed(f"IAM read refused: {_code(exc)}", "IAM read")
        return self._with_permission(
            f"key {access_key_id} of user {user} is {status}", "iam:UpdateAccessKey", arn
        )

    def deactivate_key(self, access_key_id: str) -> Changed:
        return self._set_key(access_key_id, "Inactive")

    def reactivate_key(self, access_key_id: str, prior: Mapping[str, Any]) -> Changed:
        return self._set_key(access_key_id, str(prior["status"]))

    def _set_key(self, access_key_id: str, status: str) -> Changed:
        if status not in ("Active", "Inactive"):
            raise ContainmentRefused(f"access key status {status!r} is neither Active nor Inactive")
        try:
            found = self._key(access_key_id)
            if found is None:
                raise ContainmentRefused(f"access key {access_key_id} not found in the account")
            user, before = found
            self.iam.update_access_key(
                UserName=user,
                AccessKeyId=access_key_id,
                Status=status,  # type: ignore[arg-type]
            )
        except ClientError as exc:
            raise _refused("iam:UpdateAccessKey", exc) from exc
        return Changed({"user": user, "status": status}, {"user": user, "status": before})

    # -- every key of a user ------------------------------------------------------------

    def _user_keys(self, user: str) -> dict[str, str]:
        """Each access key of the user and its status; NoSuchEntity if there is no user."""
        keys: dict[str, str] = {}
        for page in self.iam.get_paginator("list_access_keys").paginate(UserName=user):
            for key in page["AccessKeyMetadata"]:
                keys[str(key.get("AccessKeyId"))] = str(key.get("Status"))
        return keys

    def check_deactivate_user_keys(self, user: str) -> Check:
        try:
            keys = self._user_keys(user)
            arn = self.iam.get_user(UserName=user)["User"]["Arn"]
        except ClientError as exc:
            if _code(exc) == "NoSuchEntity":
                return Check.failed(f"IAM user {user} not found in the account", "IAM read")
            return Check.failed(f"IAM read refused: {_code(exc)}", "IAM read")
        active = sorted(k for k, status in keys.items() if status == "Active")
        found = f"user {user} has {len(keys)} keys, {len(active)} active" + (
            f" ({', '.join(active)})" if active else ""
        )
        return self._with_permission(found, "iam:UpdateAccessKey", arn)

    def deactivate_user_keys(self, user: str) -> Changed:
        try:
            active = sorted(k for k, status in self._user_keys(user).items() if status == "Active")
            for key in active:
                self.iam.update_access_key(UserName=user, AccessKeyId=key, Status="Inactive")
        except ClientError as exc:
            raise _refused("iam:UpdateAccessKey", exc) from exc
        return Changed(
            {"user": user, "deactivated": active, "count": len(active)},
            {"user": user, "keys": {key: "Active" for key in active}},
        )

    def reactivate_user_keys(self, user: str, prior: Mapping[str, Any]) -> Changed:
        keys = dict(prior.get("keys") or {})
        try:
            present = self._user_keys(user)
            back = sorted(k for k in keys if k in present)
            for key in back:
                self.iam.update_access_key(UserName=user, AccessKeyId=key, Status="Active")
        except ClientError as exc:
            raise _refused("iam:UpdateAccessKey", exc) from exc
        return Changed({"user": user, "reactivated": back, "count": len(back)})

    # -- deny-all inline policy ----------------------------------------------------------

    def _principal(self, principal: str) -> tuple[str, str, str | None]:
        """Kind, name and ARN of `user/NAME` or `role/NAME`; the ARN is None if absent."""
        kind, _, name = principal.partition("/")
        if kind not in ("user", "role") or not name:
            raise ContainmentRefused(f"principal {principal} is neither user/NAME nor role/NAME")
        try:
            if kind == "user":
                return kind, name, self.iam.get_user(UserName=name)["User"]["Arn"]
            return kind, name, self.iam.get_role(RoleName=name)["Role"]["Arn"]
        except ClientError as exc:
            if _code(exc) == "NoSuchEntity":
                return kind, name, None
            raise

    def _inline(self, kind: str, name: str) -> str | None:
        """The current document of breachbook's inline policy on the principal, if any."""
        try:
            if kind == "user":
                document: Any = self.iam.get_user_policy(UserName=name, PolicyName=DENY_POLICY)[
                    "PolicyDocument"
                ]
            else:
                document = self.iam.get_role_policy(RoleName=name, PolicyName=DENY_POLICY)[
                    "PolicyDocument"
                ]
        except ClientError as exc:
            if _code(exc) == "NoSuchEntity":
                return None
            raise
        return document if isinstance(document, str) else json.dumps(document)

    def check_deny_principal(self, principal: str) -> Check:
        try:
            kind, name, arn = self._principal(principal)
            if arn is None:
                return Check.failed(f"IAM {kind} {name} not found in the account", "IAM read")
            present = self._inline(kind, name) is not None
        except (ClientError, ContainmentRefused) as exc:
            reason = f"IAM read refused: {_code(exc)}" if isinstance(exc, ClientError) else str(exc)
            return Check.failed(reason, "IAM read")
        found = f"IAM {kind} {name} exists" + (f", already has {DENY_POLICY}" if present else "")
        action = "iam:PutUserPolicy" if kind == "user" else "iam:PutRolePolicy"
        return self._with_permission(found, action, arn)

    def deny_principal(self, principal: str) -> Changed:
        operation = "iam:PutRolePolicy" if principal.startswith("role/") else "iam:PutUserPolicy"
        try:
            kind, name, arn = self._principal(principal)
            if arn is None:
                raise ContainmentRefused(f"IAM {kind} {name} not found in the account")
            before = self._inline(kind, name)
            self._put_inline(kind, name, DENY_ALL)
        except ClientError as exc:
            raise _refused(operation, exc) from exc
        return Changed({"principal": principal, "policy": DENY_POLICY}, {"document": before})

    def allow_principal(self, principal: str, prior: Mapping[str, Any]) -> Changed:
        """Take breachbook's deny-all policy off again (or put back the document it replaced)."""
        operation = (
            "iam:DeleteRolePolicy" if principal.startswith("role/") else "iam:DeleteUserPolicy"
        )
        try:
            kind, name, arn = self._principal(principal)
            if arn is None:
                raise ContainmentRefused(f"IAM {kind} {name} not found in the account")
            document = prior.get("document")
            if document is not None:
                self._put_inline(kind, name, str(document))
                return Changed({"principal": principal, "policy": "previous document"})
            if self._inline(kind, name) is not None:
                if kind == "user":
                    self.iam.delete_user_policy(UserName=name, PolicyName=DENY_POLICY)
                else:
                    self.iam.delete_role_policy(RoleName=name, PolicyName=DENY_POLICY)
        except ClientError as exc:
            raise _refused(operation, exc) from exc
        return Changed({"principal": principal, "policy": "removed"})

    def _put_inline(self, kind: str, name: str, document: str) -> None:
        if kind == "user":
            self.iam.put_user_policy(UserName=name, PolicyName=DENY_POLICY, PolicyDocument=document)
        else:
            self.iam.put_role_policy(RoleName=name, PolicyName=DENY_POLICY, PolicyDocument=document)

    # -- hosts ----------------------------------------------------------------------------

    def _instance(self, host: str) -> InstanceTypeDef | None:
        try:
            if host.startswith("i-"):
                pages = self.ec2.describe_instances(InstanceIds=[host])
            else:
                pages = self.ec2.describe_instances(
                    Filters=[{"Name": "tag:Name", "Values": [host]}]
                )
        except ClientError as exc:
            if _code(exc).startswith("InvalidInstanceID"):
                return None
            raise
        found = [i for r in pages["Reservations"] for i in r.get("Instances", [])]
        live = [i for i in found if i.get("State", {}).get("Name") != "terminated"]
        if len(live) > 1:
            raise ContainmentRefused(f"host {host} names {len(live)} instances; give instance ids")
        return live[0] if live else None

    def _group_id(self, vpc_id: str) -> str | None:
        groups = self.ec2.describe_security_groups(
            Filters=[
                {"Name": "group-name", "Values": [self._config.quarantine_group]},
                {"Name": "vpc-id", "Values": [vpc_id]},
            ]
        )["SecurityGroups"]
        return groups[0]["GroupId"] if groups else None

    def check_quarantine_host(self, host: str) -> Check:
        try:
            instance = self._instance(host)
            if instance is None:
                return Check.failed(f"host {host} not found in {self._config.region}", DRY_RUN)
            iid, vpc = instance["InstanceId"], instance.get("VpcId", "")
            groups = [g["GroupId"] for g in instance.get("SecurityGroups", [])]
            interfaces = len(instance.get("NetworkInterfaces", []))
            if interfaces > 1:
                return Check.failed(
                    f"instance {iid} has {interfaces} network interfaces; quarantine moves the "
                    "groups of single-interface instances only",
                    DRY_RUN,
                )
            quarantine = self._group_id(vpc)
        except (ClientError, ContainmentRefused) as exc:
            reason = f"EC2 read refused: {_code(exc)}" if isinstance(exc, ClientError) else str(exc)
            return Check.failed(reason, DRY_RUN)
        found = f"instance {iid} in {vpc} has groups {','.join(groups) or 'none'}"
        steps: list[tuple[str, Callable[[], object]]] = []
        if quarantine is None:
            steps.append(
                (
                    "ec2:CreateSecurityGroup",
                    lambda: self.ec2.create_security_group(
                        GroupName=self._config.quarantine_group,
                        Description=QUARANTINE_DESCRIPTION,
                        VpcId=vpc,
                        DryRun=True,
                    ),
                )
            )
            found += f"; group {self._config.quarantine_group} would be created"
        target_groups = [quarantine] if quarantine else groups[:1]
        if not target_groups:
            return Check.failed(f"{found}; no group to dry-run the move with", DRY_RUN)
        steps.append(
            (
                "ec2:ModifyInstanceAttribute",
                lambda: self.ec2.modify_instance_attribute(
                    InstanceId=iid, Groups=target_groups, DryRun=True
                ),
            )
        )
        return _dry_runs(found, steps)

    def _ensure_group(self, vpc_id: str) -> str:
        existing = self._group_id(vpc_id)
        if existing:
            return existing
        created = self.ec2.create_security_group(
            GroupName=self._config.quarantine_group,
            Description=QUARANTINE_DESCRIPTION,
            VpcId=vpc_id,
        )["GroupId"]
        egress = self.ec2.describe_security_groups(GroupIds=[created])["SecurityGroups"][0]
        if egress.get("IpPermissionsEgress"):
            self.ec2.revoke_security_group_egress(
                GroupId=created, IpPermissions=egress["IpPermissionsEgress"]
            )
        return created

    def quarantine_host(self, host: str) -> Changed:
        try:
            instance = self._instance(host)
            if instance is None:
                raise ContainmentRefused(f"host {host} not found in {self._config.region}")
            iid = instance["InstanceId"]
            before = [g["GroupId"] for g in instance.get("SecurityGroups", [])]
            group = self._ensure_group(instance.get("VpcId", ""))
            self.ec2.modify_instance_attribute(InstanceId=iid, Groups=[group])
        except ClientError as exc:
            raise _refused("ec2:ModifyInstanceAttribute", exc) from exc
        return Changed({"instance": iid, "groups": group}, {"instance": iid, "groups": before})

    def release_host(self, host: str, prior: Mapping[str, Any]) -> Changed:
        groups = [str(g) for g in prior["groups"]]
        try:
            self.ec2.modify_instance_attribute(InstanceId=str(prior["instance"]), Groups=groups)
        except ClientError as exc:
            raise _refused("ec2:ModifyInstanceAttribute", exc) from exc
        return Changed({"instance": str(prior["instance"]), "groups": ",".join(groups)})

    # -- network ACLs ---------------------------------------------------------------------

    def _acls(self) -> list[NetworkAclTypeDef]:
        filters = (
            [{"Name": "vpc-id", "Values": [self._config.vpc_id]}] if self._config.vpc_id else []
        )
        acls: list[NetworkAclTypeDef] = []
        for page in self.ec2.get_paginator("describe_network_acls").paginate(Filters=filters):  # type: ignore[arg-type]
            acls.extend(page["NetworkAcls"])
        return acls

    def check_block_address(self, network: str) -> Check:
        try:
            acls = self._acls()
            account = self.sts.get_caller_identity()["Account"]
        except (ClientError, BotoCoreError) as exc:
            code = _code(exc) if isinstance(exc, ClientError) else type(exc).__name__
            return Check.failed(f"EC2 read refused: {code}", SIMULATION)
        if not acls:
            return Check.failed(
                f"no network ACL in {self._config.vpc_id or self._config.region}", SIMULATION
            )
        missing = 0
        for acl in acls:
            for egress in (False, True):
                if _deny_entry(acl, network, egress) is None:
                    missing += 1
                    if _free_rule(acl, egress, self._config.rule_base) is None:
                        return Check.failed(
                            f"network ACL {acl['NetworkAclId']} has no free rule number before "
                            "its first allow rule",
                            SIMULATION,
                        )
        found = f"{len(acls)} network ACLs; {missing} deny entries to add for {network}"
        arn = f"arn:aws:ec2:{self._config.region}:{account}:network-acl/*"
        return self._with_permission(found, "ec2:CreateNetworkAclEntry", arn)

    def block_address(self, network: str) -> Changed:
        created: list[list[Any]] = []
        try:
            for acl in self._acls():
                for egress in (False, True):
                    if _deny_entry(acl, network, egress) is not None:
                        continue
                    rule = _free_rule(acl, egress, self._config.rule_base)
                    if rule is None:
                        raise ContainmentRefused(
                            f"network ACL {acl['NetworkAclId']} has no free rule number"
                        )
                    self.ec2.create_network_acl_entry(
                        NetworkAclId=acl["NetworkAclId"],
                        RuleNumber=rule,
                        Protocol="-1",
                        RuleAction="deny",
                        Egress=egress,
                        **_cidr(network),  # type: ignore[arg-type]
                    )
                    created.append([acl["NetworkAclId"], rule, egress])
        except (ClientError, ContainmentRefused) as exc:
            self._delete_entries(created, network)
            if isinstance(exc, ClientError):
                raise _refused("ec2:CreateNetworkAclEntry", exc) from exc
            raise
        return Changed({"network": network, "entries": len(created)}, {"entries": created})

    def unblock_address(self, network: str, prior: Mapping[str, Any]) -> Changed:
        try:
            removed = self._delete_entries([list(e) for e in prior["entries"]], network)
        except ClientError as exc:
            raise _refused("ec2:DeleteNetworkAclEntry", exc) from exc
        return Changed({"network": network, "entries_removed": removed})

    def _delete_entries(self, entries: list[list[Any]], network: str) -> int:
        """Delete the deny entries listed, each only if it is still the one breachbook made."""
        if not entries:
            return 0
        acls = {a["NetworkAclId"]: a for a in self._acls()}
        removed = 0
        for acl_id, rule, egress in entries:
            entry = _deny_entry(acls[acl_id], network, bool(egress)) if acl_id in acls else None
            if entry is None or entry.get("RuleNumber") != rule:
                continue
            self.ec2.delete_network_acl_entry(
                NetworkAclId=str(acl_id), RuleNumber=int(rule), Egress=bool(egress)
            )
            removed += 1
        return removed


_SESSIONS_LOCK = threading.Lock()


@functools.cache
def _session(profile: str | None, region: str) -> boto3.Session:
    """One session per profile and region in a process: a session reads the services' API
    models (about a second for EC2) once, not once per run."""
    return boto3.Session(profile_name=profile, region_name=region)


def _principal_arn(caller: str) -> str:
    """An STS caller ARN as IAM simulation takes it: assumed-role sessions become the role."""
    if ":assumed-role/" in caller:
        prefix, rest = caller.split(":assumed-role/", 1)
        account = prefix.rsplit(":", 1)[1]
        return f"arn:aws:iam::{account}:role/{rest.split('/', 1)[0]}"
    return caller.replace("arn:aws:sts::", "arn:aws:iam::", 1)


def _dry_runs(found: str, steps: list[tuple[str, Callable[[], object]]]) -> Check:
    """Run each dry run: DryRunOperation means allowed, UnauthorizedOperation means not."""
    allowed = []
    for action, call in steps:
        try:
            call()
        except ClientError as exc:
            code = _code(exc)
            if code == "DryRunOperation":
                allowed.append(action)
                continue
            if code == "UnauthorizedOperation":
                return Check.failed(
                    f"{found}; {action} not allowed (UnauthorizedOperation)", DRY_RUN
                )
            return Check.failed(f"{found}; {action} dry run answered {code}", DRY_RUN)
        return Check.failed(f"{found}; {action} dry run was not refused as a dry run", DRY_RUN)
    return Check.verified(f"{found}; dry run allowed {', '.join(allowed)}", DRY_RUN)


def _cidr(network: str) -> dict[str, str]:
    net = ipaddress.ip_network(network, strict=False)
    return {"Ipv6CidrBlock": str(net)} if net.version == 6 else {"CidrBlock": str(net)}


def _deny_entry(acl: NetworkAclTypeDef, network: str, egress: bool) -> dict[str, Any] | None:
    ((field, value),) = _cidr(network).items()
    for entry in acl.get("Entries", []):
        if (
            entry.get("Egress") == egress
            and entry.get("RuleAction") == "deny"
            and entry.get(field) == value
        ):
            return dict(entry)
    return None


def _free_rule(acl: NetworkAclTypeDef, egress: bool, base: int) -> int | None:
    """The lowest unused rule number from `base` that comes before the first allow rule."""
    entries = [e for e in acl.get("Entries", []) if e.get("Egress") == egress]
    used = {int(e.get("RuleNumber", 0)) for e in entries}
    allows = [int(e.get("RuleNumber", 0)) for e in entries if e.get("RuleAction") == "allow"]
    first_allow = min(allows, default=FIRST_ALLOW_FALLBACK + 1)
    for number in range(max(base, 1), min(first_allow, MAX_RULE + 1)):
        if number not in used:
            return number
    return None
