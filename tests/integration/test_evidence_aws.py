"""S3 objects and EBS snapshots as evidence, against moto's server on loopback (started here
on a free port): a drill reads the objects into its bundle and only DryRuns the snapshot (the
emulated state compared before and after, since emulators do not always honour DryRun); LIVE
takes the snapshot and records its id in the custody chain."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer
from typer.testing import CliRunner

from breachbook.cli import app
from breachbook.connectors.evidence_aws import AwsEvidence
from breachbook.demo import DemoWorld
from breachbook.errors import DrillWriteBlocked
from breachbook.modes import Mode
from breachbook.settings import Settings
from breachbook.wiring import demo_settings
from tests.conftest import Fakes, free_port, run_with
from tests.evidence_playbook import snapshot_playbook

BUCKET = "org-cloudtrail-logs"
PREFIX = "AWSLogs/123456789012/CloudTrail/"

PLAYBOOK_WITH = """\
tables: []
s3:
  - bucket: {bucket}
    prefix: {prefix}
volumes: [{volume}]
"""


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            mp.setenv(name, "testing")
        mp.setenv("AWS_DEFAULT_REGION", "eu-west-1")
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
        server.stop()


@pytest.fixture(scope="module")
def account(moto_url: str) -> dict[str, Any]:
    s3 = _client("s3", moto_url)
    s3.create_bucket(
        Bucket=BUCKET,
        CreateBucketConfiguration={"LocationConstraint": "eu-west-1"},
        ObjectLockEnabledForBucket=True,
    )
    logs = {}
    for n in range(3):
        key = f"{PREFIX}eu-west-1/2026/11/28/trail-{n}.json.gz"
        body = gzip.compress(
            json.dumps({"Records": [{"eventName": "GetObject", "n": n}] * 5000}).encode()
        )
        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
        logs[f"s3://{BUCKET}/{key}"] = body
    s3.put_object(Bucket=BUCKET, Key="elsewhere/not-this.txt", Body=b"other")
    ec2 = _client("ec2", moto_url)
    volume = ec2.create_volume(AvailabilityZone="eu-west-1a", Size=8)["VolumeId"]
    return {"logs": logs, "volume": volume, "ec2": ec2}


def _client(service: str, url: str) -> Any:
    session: Any = boto3.session.Session(region_name="eu-west-1")
    return session.client(service, endpoint_url=url)


def _snapshots(account: dict[str, Any]) -> list[str]:
    found = account["ec2"].describe_snapshots(OwnerIds=["self"])["Snapshots"]
    return sorted(s["SnapshotId"] for s in found if s.get("VolumeId") == account["volume"])


def _run(mode: Mode, base: Path, world: DemoWorld, moto_url: str, account: dict[str, Any]) -> Path:
    playbook = base / "playbook.yaml"
    playbook.write_text(
        snapshot_playbook(
            "evidence-aws",
            PLAYBOOK_WITH.format(bucket=BUCKET, prefix=PREFIX, volume=account["volume"]),
        )
    )
    settings = demo_settings(
        Settings(
            home=base / "home",
            aws_endpoint_url=moto_url,
            aws_region="eu-west-1",
            evidence_drill_contents="encrypted",
        ),
        world.customers_db,
        base / "demo",
    )
    out = base / "out" if mode is Mode.DRILL else None
    result = run_with(mode, settings, Fakes(base), out, world.incident_file, playbook)
    return out or settings.home / "runs" / result.incident_id / result.run_id


def _records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (out / "evidence" / "manifest.jsonl").read_text().splitlines()]


def test_a_drill_reads_the_trail_and_only_dry_runs_the_snapshot(
    moto_url: str, account: dict[str, Any], small_world: DemoWorld, tmp_path: Path
) -> None:
    before = _snapshots(account)
    out = _run(Mode.DRILL, tmp_path, small_world, moto_url, account)
    assert _snapshots(account) == before
    records = _records(out)
    collected = {r["item"]: r for r in records if r["event"] == "collected"}
    assert set(account["logs"]) <= set(collected)
    assert not any("elsewhere" in item for item in collected)
    assert "snapshotted" not in {r["event"] for r in records}
    plan = json.loads((out / "plan.json").read_text())
    ebs = next(e for e in plan["entries"] if e["target"] == f"ebs:{account['volume']}")
    assert ebs["verdict"] == "VERIFIED" and "DryRun" in ebs["method"], ebs["reason"]
    to = tmp_path / "legal"
    env = {"BREACHBOOK_HOME": str(tmp_path / "home")}
    exported = CliRunner().invoke(
        app, ["evidence", "export", str(out / "evidence"), "--to", str(to)], env=env
    )
    assert exported.exit_code == 0, exported.output
    assert set(account["logs"].values()) <= {p.read_bytes() for p in (to / "items").iterdir()}


def test_the_drill_transport_refuses_a_real_snapshot(
    moto_url: str, account: dict[str, Any]
) -> None:
    before = _snapshots(account)
    drill = AwsEvidence("eu-west-1", moto_url, read_only=True)
    with pytest.raises(DrillWriteBlocked, match="CreateSnapshot at the transport"):
        drill.create_snapshot(account["volume"], "must not happen")
    assert _snapshots(account) == before


def test_live_snapshots_the_volume_and_records_its_id(
    moto_url: str, account: dict[str, Any], small_world: DemoWorld, tmp_path: Path
) -> None:
    before = _snapshots(account)
    out = _run(Mode.LIVE, tmp_path, small_world, moto_url, account)
    new = sorted(set(_snapshots(account)) - set(before))
    assert len(new) == 1
    taken = [r for r in _records(out) if r["event"] == "snapshotted"]
    assert [(r["volume"], r["snapshot_id"]) for r in taken] == [(account["volume"], new[0])]
    env = {"BREACHBOOK_HOME": str(tmp_path / "home")}
    verified = CliRunner().invoke(app, ["evidence", "verify", str(out / "evidence")], env=env)
    assert verified.exit_code == 0, verified.output
