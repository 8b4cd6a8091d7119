"""Containment on AWS as moto emulates it, in server mode on loopback, driven by boto3 through
the product's wiring (settings pointing at the endpoint). A drill is judged by the emulated
state before and after and by every request moto received; LIVE by the real effect; restore
by the state coming back. moto cannot simulate IAM policies, so the checks that rely on
simulation must say UNVERIFIED and why: that path is asserted here too."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from pydantic import SecretStr

from breachbook.connectors.aws import AwsCloud, AwsConfig
from breachbook.demo import DemoWorld
from breachbook.engine import Status
from breachbook.errors import BreachbookError, DrillWriteBlocked
from breachbook.modes import Mode
from breachbook.ports import Changed, Check
from breachbook.run import execute
from breachbook.settings import Settings
from breachbook.wiring import Adapters, RunRequest, cloud, mode_profile
from tests.fakes import ScriptedApprovals
from tests.integration.contain import (
    DENY_PLAYBOOK,
    by_target,
    restore_cli,
    run_contain,
    write_incident,
)
from tests.integration.moto_server import REGION, MotoServer, Request, start_moto

if TYPE_CHECKING:
    from mypy_boto3_ec2 import EC2Client
    from mypy_boto3_iam import IAMClient

ADDRESSES = ["203.0.113.0/24", "198.51.100.23/32"]
NO_SIMULATION = "IAM policy simulation is not available here"
AMI = "ami-12c6146b"
"""An image id moto knows without describing its whole catalogue (which takes seconds)."""


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    yield from start_moto()


@dataclass
class Account:
    """What the breach touched in the emulated account, and the state a test compares."""

    iam: IAMClient
    ec2: EC2Client
    key_id: str
    instance_id: str
    default_group: str

    def state(self) -> dict[str, Any]:
        keys = self.iam.list_access_keys(UserName="etl")["AccessKeyMetadata"]
        instance = self.ec2.describe_instances(InstanceIds=[self.instance_id])
        groups = instance["Reservations"][0]["Instances"][0]["SecurityGroups"]
        acls = self.ec2.describe_network_acls()["NetworkAcls"]
        security_groups = self.ec2.describe_security_groups()["SecurityGroups"]
        return {
            "keys": sorted((k["AccessKeyId"], k["Status"]) for k in keys),
            "instance_groups": sorted(g["GroupId"] for g in groups),
            "acl_entries": sorted(
                (
                    a["NetworkAclId"],
                    e["RuleNumber"],
                    e["Egress"],
                    e["RuleAction"],
                    e.get("CidrBlock", ""),
                )
                for a in acls
                for e in a["Entries"]
            ),
            "security_groups": sorted(
                (g["GroupName"], len(g["IpPermissions"]), len(g["IpPermissionsEgress"]))
                for g in security_groups
            ),
        }


@pytest.fixture
def account(moto: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Account:
    """A fresh emulated account: user etl with one key, one instance tagged web-1."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    moto.reset()
    iam = boto3.client("iam", endpoint_url=moto.endpoint, region_name=REGION)
    ec2 = boto3.client("ec2", endpoint_url=moto.endpoint, region_name=REGION)
    iam.create_user(UserName="etl")
    key = iam.create_access_key(UserName="etl")["AccessKey"]["AccessKeyId"]
    default = ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["default"]}])[
        "SecurityGroups"
    ][0]["GroupId"]
    instance = ec2.run_instances(
        ImageId=AMI,
        MinCount=1,
        MaxCount=1,
        SecurityGroupIds=[default],
        TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "web-1"}]}
        ],
    )["Instances"][0]["InstanceId"]
    return Account(iam, ec2, key, instance, default)


def settings_for(tmp_path: Path, moto: MotoServer) -> Settings:
    return Settings(home=tmp_path / "home", aws_region=REGION, aws_endpoint_url=moto.endpoint)


def incident_for(tmp_path: Path, account: Account, incident_id: str) -> Path:
    return write_incident(
        tmp_path / "incident",
        incident_id,
        access_key_ids=[account.key_id],
        hosts=["web-1"],
        source_addresses=ADDRESSES,
    )


AWS_STEPS = ("deactivate-keys", "quarantine-hosts", "block-addresses")
READS = ("Describe", "Get", "List", "Simulate")


def changes_state(request: Request) -> bool:
    """By name and flag; the tests judge by the emulated state as well, since moto applies
    some DryRun requests."""
    return not (request.action.startswith(READS) or request.dry_run)


def test_drill_checks_every_target_sends_only_reads_and_dry_runs_and_changes_nothing(
    moto: MotoServer, account: Account, tmp_path: Path
) -> None:
    before = account.state()
    start = len(moto.recorder.since(0))
    result = run_contain(
        Mode.DRILL,
        settings_for(tmp_path, moto),
        incident_for(tmp_path, account, "inc-aws-drill"),
        tmp_path / "out",
    )
    received = moto.recorder.since(start)

    assert account.state() == before
    assert received and [r for r in received if changes_state(r)] == []
    assert {r.action for r in received if r.dry_run} == {
        "CreateSecurityGroup",
        "ModifyInstanceAttribute",
    }
    key = by_target(result, "deactivate-keys")[account.key_id]
    assert (key.verdict, key.status) == ("UNVERIFIED", Status.PLANNED)
    assert key.reason.startswith(f"key {account.key_id} of user etl is Active; permission for ")
    assert NO_SIMULATION in key.reason
    host = by_target(result, "quarantine-hosts")["web-1"]
    assert (host.verdict, host.method) == ("VERIFIED", "EC2 DryRun")
    assert host.reason.endswith(
        "group breachbook-quarantine would be created; "
        "dry run allowed ec2:CreateSecurityGroup, ec2:ModifyInstanceAttribute"
    )
    for address in ADDRESSES:
        block = by_target(result, "block-addresses")[address]
        assert block.verdict == "UNVERIFIED"
        assert block.reason.startswith(f"1 network ACLs; 2 deny entries to add for {address}")
        assert NO_SIMULATION in block.reason


def test_live_deactivates_quarantines_blocks_and_restore_undoes_it(
    moto: MotoServer, account: Account, tmp_path: Path
) -> None:
    settings = settings_for(tmp_path, moto)
    incident = incident_for(tmp_path, account, "inc-aws-live")
    before = account.state()

    result = run_contain(Mode.LIVE, settings, incident, tmp_path / "live")

    entries = [e for e in result.entries() if e.step_id in AWS_STEPS]
    assert {e.status for e in entries} == {Status.COMPLETED}, [e.details for e in entries]
    after = account.state()
    assert after["keys"] == [(account.key_id, "Inactive")]
    quarantine = account.ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": ["breachbook-quarantine"]}]
    )["SecurityGroups"]
    assert len(quarantine) == 1
    assert quarantine[0]["IpPermissions"] == [] and quarantine[0]["IpPermissionsEgress"] == []
    assert after["instance_groups"] == [quarantine[0]["GroupId"]]
    denies = [e for e in after["acl_entries"] if e[3] == "deny" and e[1] < 100]
    assert sorted((e[2], e[4]) for e in denies) == sorted(
        (egress, cidr) for cidr in ADDRESSES for egress in (False, True)
    )

    again = run_contain(Mode.LIVE, settings, incident, tmp_path / "again")
    assert {e.status for e in again.entries() if e.step_id in AWS_STEPS} == {Status.ALREADY_DONE}
    assert account.state() == after

    output = restore_cli(settings, "inc-aws-live")
    assert "4 change(s) considered" in output
    restored = account.state()
    # The quarantine group stays (empty, unused) for the next incident; all else is back.
    assert {k: v for k, v in restored.items() if k != "security_groups"} == {
        k: v for k, v in before.items() if k != "security_groups"
    }


def test_unknown_targets_fail_with_the_reason(
    moto: MotoServer, account: Account, tmp_path: Path
) -> None:
    adapter = cloud(settings_for(tmp_path, moto), read_only=True)
    assert adapter is not None
    assert adapter.check_deactivate_key("AKIAZ3MDEMOLEAKED01") == Check.failed(
        "access key AKIAZ3MDEMOLEAKED01 not found in the account", "IAM read"
    )
    assert adapter.check_quarantine_host("i-0a1b2c3d4e5f60718") == Check.failed(
        f"host i-0a1b2c3d4e5f60718 not found in {REGION}", "EC2 DryRun"
    )


class ReadThatWrites(AwsCloud):
    """A deliberately wrong adapter: its read-only check deactivates the key."""

    def check_deactivate_key(self, access_key_id: str) -> Check:
        self.deactivate_key(access_key_id)
        return Check.verified("deactivated while checking", "bug")


def test_the_drill_transport_refuses_writes_even_a_dry_run_moto_would_apply(
    moto: MotoServer, account: Account, tmp_path: Path
) -> None:
    drill = mode_profile(Mode.DRILL)
    settings = settings_for(tmp_path, moto)
    built = cloud(settings, drill.transport_read_only)
    assert built is not None
    before = account.state()
    start = len(moto.recorder.since(0))
    with pytest.raises(DrillWriteBlocked, match="drill: refused AWS UpdateAccessKey"):
        built.deactivate_key(account.key_id)
    buggy = ReadThatWrites(
        AwsConfig(region=REGION, endpoint_url=moto.endpoint), read_only=drill.transport_read_only
    )
    with pytest.raises(DrillWriteBlocked):
        buggy.check_deactivate_key(account.key_id)
    acl = account.ec2.describe_network_acls()["NetworkAcls"][0]["NetworkAclId"]
    entry: dict[str, Any] = {
        "NetworkAclId": acl,
        "RuleNumber": 7,
        "Protocol": "-1",
        "RuleAction": "deny",
        "Egress": False,
        "CidrBlock": ADDRESSES[0],
        "DryRun": True,
    }
    with pytest.raises(DrillWriteBlocked, match="CreateNetworkAclEntry"):
        built.ec2.create_network_acl_entry(**entry)
    assert account.state() == before
    assert [r.action for r in moto.recorder.since(start) if changes_state(r)] == []

    # Why the transport refuses it: moto applies this DryRun request (AWS would not).
    account.ec2.create_network_acl_entry(**entry)
    assert account.state() != before


def test_a_failed_block_leaves_no_half_made_entries(
    moto: MotoServer, account: Account, tmp_path: Path
) -> None:
    """Partial failure inside one target: entries made before the refusal are taken back."""
    adapter = AwsCloud(AwsConfig(region=REGION, endpoint_url=moto.endpoint, rule_base=99))
    before = account.state()
    changed: Changed = adapter.block_address(ADDRESSES[0])
    assert changed.prior is not None and len(changed.prior["entries"]) == 2
    with pytest.raises(Exception, match="no free rule number"):
        adapter.block_address(ADDRESSES[1])
    adapter.unblock_address(ADDRESSES[0], changed.prior)
    assert account.state() == before


def test_the_demo_drill_with_both_connectors_leaves_no_containment_step_unconfigured(
    moto: MotoServer,
    account: Account,
    pg_admin_url: str,
    demo_run_settings: Settings,
    small_world: DemoWorld,
    tmp_path: Path,
) -> None:
    """The reference playbook on the demo incident, with the database-admin and cloud
    settings set: each containment entry is checked against the real servers (the demo's
    key and host do not exist in the emulated account, so they are FAILED, with the reason)."""
    settings = demo_run_settings.model_copy(
        update={
            "database_admin_url": SecretStr(pg_admin_url),
            "aws_region": REGION,
            "aws_endpoint_url": moto.endpoint,
        }
    )
    before = account.state()
    start = len(moto.recorder.since(0))
    _, result = execute(
        RunRequest(
            mode=Mode.DRILL, incident_file=small_world.incident_file, out_dir=tmp_path / "o"
        ),
        settings=settings,
        adapters=Adapters(approvals=ScriptedApprovals({"legal", "comms", "incident-lead"})),
    )
    contain = {
        (e.step_id, e.target): (e.verdict, e.reason)
        for e in result.entries()
        if e.phase == "contain" and e.action.startswith(("database.", "cloud.", "network."))
    }
    assert len(contain) >= 6
    assert not [r for r in contain.values() if "connector configured" in r[1]]
    # Whether the shared test server has a role analytics_etl is not this test's business.
    assert contain[("lock-db-role", "analytics_etl")][0] in ("VERIFIED", "FAILED")
    assert contain[("deactivate-keys", "AKIAZ3MDEMOLEAKED01")] == (
        "FAILED",
        "access key AKIAZ3MDEMOLEAKED01 not found in the account",
    )
    assert contain[("quarantine-hosts", "i-0a1b2c3d4e5f60718")][0] == "FAILED"
    for address in ("203.0.113.0/24", "198.51.100.23/32"):
        verdict, reason = contain[("block-addresses", address)]
        assert verdict == "UNVERIFIED" and NO_SIMULATION in reason
    assert account.state() == before
    assert [r for r in moto.recorder.since(start) if changes_state(r)] == []


def test_deny_all_policy_drill_live_with_one_unknown_principal_and_restore(
    moto: MotoServer, account: Account, tmp_path: Path
) -> None:
    """The deny-all inline policy; one principal that does not exist is refused while the
    others are still denied (partial failure), and restore takes off only what was put on."""
    trust = '{"Version": "2012-10-17", "Statement": []}'
    account.iam.create_role(RoleName="etl-job", AssumeRolePolicyDocument=trust)
    settings = settings_for(tmp_path, moto)
    incident = write_incident(tmp_path / "incident", "inc-aws-deny")

    def policies() -> tuple[list[str], list[str]]:
        users = account.iam.list_user_policies(UserName="etl")["PolicyNames"]
        roles = account.iam.list_role_policies(RoleName="etl-job")["PolicyNames"]
        return users, roles

    start = len(moto.recorder.since(0))
    drill = run_contain(Mode.DRILL, settings, incident, tmp_path / "drill", DENY_PLAYBOOK)
    entries = by_target(drill, "deny-principals")
    assert entries["user/etl"].verdict == "UNVERIFIED"
    assert entries["user/etl"].reason.startswith(
        "IAM user etl exists; permission for iam:PutUserPolicy"
    )
    assert NO_SIMULATION in entries["role/etl-job"].reason
    assert (entries["user/nobody"].verdict, entries["user/nobody"].reason) == (
        "FAILED",
        "IAM user nobody not found in the account",
    )
    assert policies() == ([], [])
    assert [r for r in moto.recorder.since(start) if changes_state(r)] == []

    live = run_contain(Mode.LIVE, settings, incident, tmp_path / "live", DENY_PLAYBOOK)
    statuses = {t: e.status for t, e in by_target(live, "deny-principals").items()}
    assert statuses == {
        "user/etl": Status.COMPLETED,
        "role/etl-job": Status.COMPLETED,
        "user/nobody": Status.REFUSED,
    }
    assert policies() == (["breachbook-deny-all"], ["breachbook-deny-all"])
    document = account.iam.get_user_policy(UserName="etl", PolicyName="breachbook-deny-all")
    raw: Any = document["PolicyDocument"]  # typed str; boto3 hands back the parsed JSON
    assert (json.loads(raw) if isinstance(raw, str) else raw)["Statement"] == [
        {"Effect": "Deny", "Action": "*", "Resource": "*"}
    ]

    assert "2 change(s) considered" in restore_cli(settings, "inc-aws-deny")
    assert policies() == ([], [])


def test_a_profile_that_does_not_exist_is_one_line_naming_the_setting(
    account: Account, tmp_path: Path
) -> None:
    settings = Settings(home=tmp_path / "home", aws_region=REGION, aws_profile="nope")
    with pytest.raises(BreachbookError) as caught:
        cloud(settings, read_only=True)
    assert str(caught.value) == "BREACHBOOK_AWS_PROFILE: no profile 'nope' in the AWS config files"


USER_KEYS_PLAYBOOK = DENY_PLAYBOOK.parent / "user-keys.yaml"


def test_every_active_key_of_a_user_is_deactivated_once_and_restore_reactivates_them(
    moto: MotoServer, account: Account, tmp_path: Path
) -> None:
    """`cloud.deactivate_user_keys`: the drill lists the user's keys and changes nothing;
    LIVE deactivates each active key (an inactive one stays as it is and is not restored)."""
    second = account.iam.create_access_key(UserName="etl")["AccessKey"]["AccessKeyId"]
    account.iam.update_access_key(UserName="etl", AccessKeyId=second, Status="Inactive")
    account.iam.create_user(UserName="other")
    other = account.iam.create_access_key(UserName="other")["AccessKey"]["AccessKeyId"]
    settings = settings_for(tmp_path, moto)
    incident = write_incident(tmp_path / "incident", "inc-user-keys")
    before = account.state()
    start = len(moto.recorder.since(0))

    drill = run_contain(Mode.DRILL, settings, incident, tmp_path / "drill", USER_KEYS_PLAYBOOK)

    assert account.state() == before
    assert [r for r in moto.recorder.since(start) if changes_state(r)] == []
    plan = by_target(drill, "deactivate-user-keys")
    assert plan["etl"].reason.startswith(f"user etl has 2 keys, 1 active ({account.key_id})")
    assert (plan["nobody"].verdict, plan["nobody"].reason) == (
        "FAILED",
        "IAM user nobody not found in the account",
    )

    live = run_contain(Mode.LIVE, settings, incident, tmp_path / "live", USER_KEYS_PLAYBOOK)
    done = by_target(live, "deactivate-user-keys")
    assert done["etl"].status == Status.COMPLETED, done["etl"]
    assert done["nobody"].status == Status.REFUSED
    assert account.state()["keys"] == sorted([(account.key_id, "Inactive"), (second, "Inactive")])
    others = account.iam.list_access_keys(UserName="other")["AccessKeyMetadata"]
    assert [(k["AccessKeyId"], k["Status"]) for k in others] == [(other, "Active")]

    again = run_contain(Mode.LIVE, settings, incident, tmp_path / "again", USER_KEYS_PLAYBOOK)
    assert by_target(again, "deactivate-user-keys")["etl"].status == Status.ALREADY_DONE

    restore_cli(settings, "inc-user-keys")
    assert account.state() == before
