"""Evidence transferred write-once to S3 with Object Lock, against moto's server on loopback
(moto enforces Object Lock: deleting a locked version is refused). LIVE stores every sealed
item and the manifest in compliance mode until the step's retention, under legal hold; a
bucket without Object Lock is refused before anything is stored; a drill stores nothing."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from typer.testing import CliRunner

from breachbook.cli import app
from breachbook.connectors.evidence_s3 import PART_BYTES, S3EvidenceStore
from breachbook.demo import DemoWorld
from breachbook.errors import DrillWriteBlocked
from breachbook.modes import Mode
from breachbook.settings import Settings
from breachbook.wiring import demo_settings
from tests.conftest import Fakes, run_with
from tests.evidence_playbook import snapshot_playbook
from tests.integration.moto_server import REGION, MotoServer, start_moto

LOCKED = "org-evidence-locked"
PLAIN = "org-evidence-plain"
RETENTION_DAYS = 30
MINUTE = timedelta(minutes=1)

PLAYBOOK_WITH = """\
tables: []
files:
  - root: {logs}
retention: P{days}D
"""


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            mp.setenv(name, "testing")
        yield from start_moto()


@pytest.fixture
def s3(moto: MotoServer) -> Any:
    moto.reset()
    client = boto3.session.Session(region_name=REGION).client("s3", endpoint_url=moto.endpoint)
    where = {"CreateBucketConfiguration": {"LocationConstraint": REGION}}
    client.create_bucket(Bucket=LOCKED, ObjectLockEnabledForBucket=True, **where)
    client.create_bucket(Bucket=PLAIN, **where)
    return client


def _versions(s3: Any, bucket: str) -> list[dict[str, Any]]:
    return list(s3.list_object_versions(Bucket=bucket).get("Versions", []))


def _run(
    mode: Mode, bucket: str, base: Path, world: DemoWorld, moto: MotoServer
) -> tuple[Path, Any]:
    logs = base / "logs"
    logs.mkdir()
    (logs / "app.log").write_bytes(b"GET /export 200\n" * 1000)
    (logs / "big.bin").write_bytes(os.urandom(PART_BYTES + PART_BYTES // 2))
    playbook = base / "playbook.yaml"
    playbook.write_text(
        snapshot_playbook("evidence-s3", PLAYBOOK_WITH.format(logs=logs, days=RETENTION_DAYS))
    )
    settings = demo_settings(
        Settings(
            home=base / "home",
            aws_endpoint_url=moto.endpoint,
            aws_region=REGION,
            evidence_bucket=bucket,
        ),
        world.customers_db,
        base / "demo",
    )
    fakes = Fakes(base, evidence_in_folder=False)
    out = base / "out" if mode is Mode.DRILL else None
    result = run_with(mode, settings, fakes, out, world.incident_file, playbook)
    return out or settings.home / "runs" / result.incident_id / result.run_id, result


def _plan(folder: Path) -> list[dict[str, Any]]:
    return list(json.loads((folder / "plan.json").read_text())["entries"])


def test_live_stores_each_sealed_item_write_once_until_the_retention(
    moto: MotoServer, s3: Any, small_world: DemoWorld, tmp_path: Path
) -> None:
    folder, _ = _run(Mode.LIVE, LOCKED, tmp_path, small_world, moto)
    records = [
        json.loads(x) for x in (folder / "evidence" / "manifest.jsonl").read_text().splitlines()
    ]
    transfers = [r for r in records if r["event"] == "transferred"]
    collected = [r for r in records if r["event"] == "collected"]
    assert len(transfers) == len(collected) >= 4, (transfers, collected)
    transferred = min(datetime.fromisoformat(r["at"]) for r in transfers)
    sealed = {
        p.name: p.read_bytes() for p in (folder / "evidence" / "items").rglob("*") if p.is_file()
    }
    assert len(sealed) >= 4, sealed.keys()
    versions = _versions(s3, LOCKED)
    stored = {v["Key"].rsplit("/", 1)[-1] for v in versions}
    assert set(sealed) <= stored and "manifest.jsonl" in stored
    for version in versions:
        key, version_id = version["Key"], version["VersionId"]
        head = s3.head_object(Bucket=LOCKED, Key=key, VersionId=version_id)
        assert head["ObjectLockMode"] == "COMPLIANCE", key
        assert head["ObjectLockLegalHoldStatus"] == "ON", key
        until = head["ObjectLockRetainUntilDate"]
        assert abs(until - (transferred + timedelta(days=RETENTION_DAYS))) < MINUTE, (key, until)
        name = key.rsplit("/", 1)[-1]
        if name in sealed:
            body = s3.get_object(Bucket=LOCKED, Key=key, VersionId=version_id)["Body"].read()
            assert body == sealed[name], key
        with pytest.raises(ClientError, match="AccessDenied"):
            s3.delete_object(Bucket=LOCKED, Key=key, VersionId=version_id)
    assert len(_versions(s3, LOCKED)) == len(versions)
    env = {"BREACHBOOK_HOME": str(tmp_path / "home")}
    verified = CliRunner().invoke(app, ["evidence", "verify", str(folder / "evidence")], env=env)
    assert verified.exit_code == 0, verified.output


def test_a_bucket_without_object_lock_is_refused_before_anything_is_stored(
    moto: MotoServer, s3: Any, small_world: DemoWorld, tmp_path: Path
) -> None:
    folder, _ = _run(Mode.LIVE, PLAIN, tmp_path, small_world, moto)
    assert _versions(s3, PLAIN) == []
    refused = [e for e in _plan(folder) if e["action"] == "evidence.snapshot"]
    assert refused and all(e["verdict"] == "FAILED" for e in refused), refused
    assert all(f"bucket {PLAIN} has no Object Lock" in e["reason"] for e in refused)


def test_a_drill_checks_the_lock_and_stores_nothing(
    moto: MotoServer, s3: Any, small_world: DemoWorld, tmp_path: Path
) -> None:
    folder, _ = _run(Mode.DRILL, LOCKED, tmp_path, small_world, moto)
    assert _versions(s3, LOCKED) == []
    checked = [e for e in _plan(folder) if e["action"] == "evidence.snapshot"]
    assert checked and all(e["verdict"] == "VERIFIED" for e in checked), checked
    assert all(f"bucket {LOCKED} has Object Lock" in e["reason"] for e in checked)


def test_the_drill_transport_refuses_an_upload(moto: MotoServer, s3: Any) -> None:
    drill = S3EvidenceStore(LOCKED, REGION, moto.endpoint, read_only=True)
    until = datetime.now(UTC) + timedelta(days=1)
    with pytest.raises(DrillWriteBlocked, match="PutObject at the transport"):
        drill.put("x/item", iter([b"evidence"]), until)
    assert _versions(s3, LOCKED) == []


def test_a_failed_multipart_upload_leaves_nothing_half_written(moto: MotoServer, s3: Any) -> None:
    store = S3EvidenceStore(LOCKED, REGION, moto.endpoint, read_only=False)

    def cut_short() -> Iterator[bytes]:
        yield os.urandom(PART_BYTES + 1)
        raise OSError("disk read failed")

    with pytest.raises(OSError, match="disk read failed"):
        store.put("x/big", cut_short(), datetime.now(UTC) + timedelta(days=1))
    assert _versions(s3, LOCKED) == []
    assert s3.list_multipart_uploads(Bucket=LOCKED).get("Uploads", []) == []
