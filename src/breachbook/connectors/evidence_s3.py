"""Where LIVE evidence bundles are transferred when they must be write-once: an S3 bucket with
Object Lock. Every object is written in COMPLIANCE mode with a retain-until date from the
playbook, so nobody, the account's root included, can delete or overwrite that version before
it; a bundle under legal hold also gets S3's own legal hold, which outlasts the retention.

The bucket must have been created with Object Lock enabled: preflight refuses a bucket
without it rather than store evidence that could be deleted. Items stream through a
multipart upload in parts of `PART_BYTES`, so memory stays flat whatever an item's size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from breachbook.errors import BreachbookError, DrillWriteBlocked
from breachbook.ports import Check

PART_BYTES = 8 * 1024 * 1024
"""S3 wants parts of at least 5 MiB but the last; 8 MiB keeps memory low and parts few."""
COMPLIANCE = "COMPLIANCE"
READ_OPERATIONS = frozenset({"GetObjectLockConfiguration", "HeadObject", "HeadBucket"})
"""What a drill's client may send; anything else is refused below the port."""


class EvidenceStoreError(BreachbookError):
    """The evidence bucket refused or lost an item."""


def _refuse_writes(model: Any, **_: Any) -> None:
    if model.name not in READ_OPERATIONS:
        raise DrillWriteBlocked(f"drill: refused s3:{model.name} at the transport")


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "unknown"))


class S3EvidenceStore:
    def __init__(
        self,
        bucket: str,
        region: str | None,
        endpoint_url: str | None,
        profile: str | None = None,
        read_only: bool = True,
    ) -> None:
        session: Any = boto3.session.Session(
            region_name=region or "us-east-1", profile_name=profile
        )
        self.bucket = bucket
        self._s3: Any = session.client("s3", endpoint_url=endpoint_url)
        if read_only:
            self._s3.meta.events.register("before-parameter-build", _refuse_writes)

    def describe(self) -> str:
        return f"S3 bucket {self.bucket} (Object Lock, compliance mode)"

    def check_writable(self) -> Check:
        method = "s3:GetObjectLockConfiguration"
        try:
            answer = self._s3.get_object_lock_configuration(Bucket=self.bucket)
        except ClientError as exc:
            code = _code(exc)
            if code == "ObjectLockConfigurationNotFoundError":
                return Check.failed(
                    f"bucket {self.bucket} has no Object Lock: evidence there could be deleted; "
                    "create the bucket with Object Lock enabled",
                    method,
                )
            return Check.failed(f"bucket {self.bucket}: cannot read its lock ({code})", method)
        except BotoCoreError as exc:
            return Check.failed(f"bucket {self.bucket}: no answer ({type(exc).__name__})", method)
        config = answer.get("ObjectLockConfiguration", {})
        if config.get("ObjectLockEnabled") != "Enabled":
            return Check.failed(f"bucket {self.bucket}: Object Lock is not enabled", method)
        return Check.verified(
            f"bucket {self.bucket} has Object Lock; items are written in compliance mode", method
        )

    def put(
        self,
        item_id: str,
        chunks: Iterator[bytes],
        retain_until: datetime | None = None,
        legal_hold: bool = False,
    ) -> str:
        """Upload one item under `item_id`, locked until `retain_until`; returns the SHA-256
        of the bytes sent, after checking S3 holds the object locked as asked."""
        if retain_until is None:
            raise EvidenceStoreError(
                f"{item_id}: a write-once store needs a retain-until date (the step's retention)"
            )
        lock: dict[str, Any] = {
            "ObjectLockMode": COMPLIANCE,
            "ObjectLockRetainUntilDate": retain_until,
        }
        if legal_hold:
            lock["ObjectLockLegalHoldStatus"] = "ON"
        digest = hashlib.sha256()
        try:
            version = self._upload(item_id, chunks, digest, lock)
            where = {"VersionId": version} if version else {}
            head = self._s3.head_object(Bucket=self.bucket, Key=item_id, **where)
            if head.get("ObjectLockMode") != COMPLIANCE:
                self._lock(item_id, where, retain_until, legal_hold)
                head = self._s3.head_object(Bucket=self.bucket, Key=item_id, **where)
        except ClientError as exc:
            raise EvidenceStoreError(
                f"s3://{self.bucket}/{item_id}: refused ({_code(exc)})"
            ) from None
        except BotoCoreError as exc:
            raise EvidenceStoreError(
                f"s3://{self.bucket}/{item_id}: not stored ({type(exc).__name__})"
            ) from None
        if head.get("ObjectLockMode") != COMPLIANCE:
            raise EvidenceStoreError(
                f"s3://{self.bucket}/{item_id}: stored without a compliance lock; "
                "the bucket ignored Object Lock"
            )
        return digest.hexdigest()

    def _lock(
        self, key: str, where: dict[str, Any], retain_until: datetime, legal_hold: bool
    ) -> None:
        """Lock a version the upload left unlocked (an S3-compatible store that drops the lock
        of a multipart upload), at once, before the item is reported stored."""
        self._s3.put_object_retention(
            Bucket=self.bucket,
            Key=key,
            Retention={"Mode": COMPLIANCE, "RetainUntilDate": retain_until},
            **where,
        )
        if legal_hold:
            self._s3.put_object_legal_hold(
                Bucket=self.bucket, Key=key, LegalHold={"Status": "ON"}, **where
            )

    def _upload(
        self, key: str, chunks: Iterator[bytes], digest: Any, lock: dict[str, Any]
    ) -> str | None:
        """One PutObject for an item smaller than a part, else a multipart upload that is
        aborted (nothing left half-written) on any failure. Returns the version id."""
        buffer = bytearray()
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        try:
            for chunk in chunks:
                digest.update(chunk)
                buffer.extend(chunk)
                while len(buffer) >= PART_BYTES:
                    if upload_id is None:
                        upload_id = self._s3.create_multipart_upload(
                            Bucket=self.bucket, Key=key, ChecksumAlgorithm="SHA256", **lock
                        )["UploadId"]
                    parts.append(self._part(key, upload_id, len(parts) + 1, buffer[:PART_BYTES]))
                    del buffer[:PART_BYTES]
            if upload_id is None:
                answer = self._s3.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=bytes(buffer),
                    ChecksumAlgorithm="SHA256",
                    **lock,
                )
                return _version(answer)
            if buffer:
                parts.append(self._part(key, upload_id, len(parts) + 1, buffer))
            answer = self._s3.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
            return _version(answer)
        except BaseException:
            if upload_id is not None:
                self._s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            raise

    def _part(
        self, key: str, upload_id: str, number: int, data: bytes | bytearray
    ) -> dict[str, Any]:
        answer = self._s3.upload_part(
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=bytes(data),
            ChecksumAlgorithm="SHA256",
        )
        part = {"PartNumber": number, "ETag": answer["ETag"]}
        if "ChecksumSHA256" in answer:
            part["ChecksumSHA256"] = answer["ChecksumSHA256"]
        return part


def _version(answer: dict[str, Any]) -> str | None:
    version = answer.get("VersionId")
    return None if version is None else str(version)
