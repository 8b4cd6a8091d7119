"""The AWS account as evidence, through boto3: S3 objects under a prefix (CloudTrail logs),
streamed, and EBS snapshots recorded by id.

In a drill, the clients refuse below the port every call that is neither a read nor a
DryRun request (a botocore `before-parameter-build` hook, which sees the call and its parameters), so an action that slipped past the guard
still changes nothing. Emulators do not always honour DryRun: tests compare the state before
and after, and the hook refuses anyway.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from breachbook.errors import BreachbookError, DrillWriteBlocked
from breachbook.ports import Check, EvidenceRead

READ = 1024 * 1024
READ_OPERATIONS = frozenset(
    {"ListObjectsV2", "GetObject", "HeadObject", "DescribeSnapshots", "DescribeVolumes"}
)


class CloudEvidenceError(BreachbookError):
    """An S3 object or an EBS volume could not be read or snapshotted."""


def _refuse_writes(model: Any, params: dict[str, Any], **_: Any) -> None:
    if model.name in READ_OPERATIONS or params.get("DryRun") is True:
        return
    raise DrillWriteBlocked(
        f"drill: refused {model.service_model.service_name}:{model.name} at the transport"
    )


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "unknown"))


class AwsEvidence:
    def __init__(self, region: str | None, endpoint_url: str | None, read_only: bool) -> None:
        session: Any = boto3.session.Session(region_name=region or "us-east-1")
        self._where = endpoint_url or f"AWS {session.region_name}"
        self._s3: Any = session.client("s3", endpoint_url=endpoint_url)
        self._ec2: Any = session.client("ec2", endpoint_url=endpoint_url)
        if read_only:
            for client in (self._s3, self._ec2):
                client.meta.events.register("before-parameter-build", _refuse_writes)

    def describe(self) -> str:
        return f"cloud evidence at {self._where}"

    def read_objects(
        self, bucket: str, prefix: str, max_total_bytes: int
    ) -> Iterator[EvidenceRead]:
        total = 0
        try:
            pages = self._s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for page in pages:
                for entry in page.get("Contents", []):
                    key, size = str(entry["Key"]), int(entry["Size"])
                    item = f"s3://{bucket}/{key}"
                    if total + size > max_total_bytes:
                        reason = f"{item}: not collected: over max_total_bytes {max_total_bytes}"
                        yield EvidenceRead(item, item, _failing(reason))
                        continue
                    total += size
                    yield EvidenceRead(
                        item,
                        f"S3 object {item} ({size} bytes when listed)",
                        self._object(bucket, key, size),
                    )
        except ClientError as exc:
            raise CloudEvidenceError(
                f"s3://{bucket}/{prefix}: cannot list ({_code(exc)})"
            ) from None
        except BotoCoreError as exc:
            raise CloudEvidenceError(
                f"s3://{bucket}/{prefix}: cannot list ({type(exc).__name__})"
            ) from None

    def _object(self, bucket: str, key: str, size: int) -> Iterator[bytes]:
        item = f"s3://{bucket}/{key}"
        seen = 0
        try:
            body = self._s3.get_object(Bucket=bucket, Key=key)["Body"]
            for chunk in body.iter_chunks(READ):
                seen += len(chunk)
                yield chunk
        except ClientError as exc:
            raise CloudEvidenceError(
                f"{item}: cannot read ({_code(exc)}): it vanished or was refused"
            ) from None
        except BotoCoreError as exc:
            raise CloudEvidenceError(
                f"{item}: read failed after {seen} bytes ({type(exc).__name__})"
            ) from None
        if seen != size:
            raise CloudEvidenceError(f"{item}: {seen} bytes read, {size} listed: changed mid-read")

    def check_snapshot(self, volume_id: str) -> Check:
        method = "ec2:CreateSnapshot DryRun=True"
        try:
            self._ec2.create_snapshot(VolumeId=volume_id, DryRun=True)
        except ClientError as exc:
            code = _code(exc)
            if code == "DryRunOperation":
                return Check.verified(f"a snapshot of {volume_id} would be allowed", method)
            return Check.failed(f"a snapshot of {volume_id} would fail ({code})", method)
        except BotoCoreError as exc:
            return Check.failed(f"{self._where} did not answer ({type(exc).__name__})", method)
        return Check.unverified(f"{self._where} ignored DryRun for a snapshot of {volume_id}")

    def create_snapshot(self, volume_id: str, description: str) -> str:
        try:
            answer = self._ec2.create_snapshot(VolumeId=volume_id, Description=description)
        except ClientError as exc:
            raise CloudEvidenceError(f"{volume_id}: snapshot refused ({_code(exc)})") from None
        return str(answer["SnapshotId"])


def _failing(reason: str) -> Iterator[bytes]:
    raise CloudEvidenceError(reason)
    yield b""  # pragma: no cover
