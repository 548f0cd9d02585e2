"""The mirror's bucket: any S3-compatible store, through boto3.

boto3 reads the standard settings (profiles, region, ``AWS_ENDPOINT_URL_S3`` for
S3-compatible stores such as MinIO or Ceph on premises).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from .layout import (
    RevisionManifest,
    blob_key,
    check_repo,
    git_index_key,
    ref_key,
    revision_key,
)


class StoreError(Exception):
    """The bucket cannot be read or written."""


@dataclass
class BlobBody:
    stream: Any  # botocore StreamingBody
    size: int  # bytes in this response (the range, if one was asked for)
    total: int  # the whole blob's size
    content_range: str | None


class MirrorStore:
    def __init__(self, bucket: str, client: Any | None = None) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        # Many parallel part uploads share one client: a pool as wide as the sync's workers.
        self.client = client or boto3.client("s3", config=Config(max_pool_connections=32, retries={"mode": "standard"}))

    # -- blobs -------------------------------------------------------------------------

    def has(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise StoreError(f"s3://{self.bucket}/{key}: {exc}") from exc
        return True

    def has_blob(self, sha256: str) -> bool:
        return self.has(blob_key(sha256))

    def put_blob(self, sha256: str, body: IO[bytes]) -> None:
        """Multipart upload from a file object: memory stays at a few parts however large it is."""
        from boto3.s3.transfer import TransferConfig

        self.client.upload_fileobj(
            body, self.bucket, blob_key(sha256),
            ExtraArgs={"ContentType": "application/octet-stream",
                       "CacheControl": "public, max-age=31536000, immutable"},
            # Parts in flight bound the memory: 2 x 8 MiB per file, whatever its size.
            Config=TransferConfig(multipart_threshold=8 * 1024 * 1024, multipart_chunksize=8 * 1024 * 1024,
                                  max_concurrency=2),
        )  # fmt: skip

    def open_blob(self, sha256: str, byte_range: str | None = None) -> BlobBody | None:
        from botocore.exceptions import ClientError

        args: dict[str, Any] = {"Bucket": self.bucket, "Key": blob_key(sha256)}
        if byte_range:
            args["Range"] = byte_range
        try:
            response = self.client.get_object(**args)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("NoSuchKey", "404"):
                return None
            if code == "InvalidRange":
                raise ValueError(byte_range) from exc
            raise StoreError(f"s3://{self.bucket}/{blob_key(sha256)}: {exc}") from exc
        content_range = response.get("ContentRange")
        total = int(content_range.rsplit("/", 1)[1]) if content_range else response["ContentLength"]
        return BlobBody(response["Body"], response["ContentLength"], total, content_range)

    def iter_blob(self, sha256: str, chunk: int = 1 << 20) -> Iterator[bytes]:
        body = self.open_blob(sha256)
        if body is None:
            raise StoreError(f"s3://{self.bucket}/{blob_key(sha256)}: missing")
        yield from body.stream.iter_chunks(chunk)

    def git_index(self, git_oid: str) -> str | None:
        """The sha256 a regular file's git blob id was stored under, if it was."""
        return self._read_text(git_index_key(git_oid))

    def put_git_index(self, git_oid: str, sha256: str) -> None:
        self._write_text(git_index_key(git_oid), sha256)

    # -- revisions and refs ------------------------------------------------------------

    def manifest(self, repo: str, commit: str) -> RevisionManifest | None:
        text = self._read_text(revision_key(repo, commit))
        return RevisionManifest.from_json(text) if text is not None else None

    def put_manifest(self, manifest: RevisionManifest) -> None:
        self._write_text(revision_key(manifest.repo, manifest.commit), manifest.to_json(), "application/json")

    def manifest_text(self, repo: str, commit: str) -> str | None:
        """The manifest exactly as stored: what its signature signs."""
        return self._read_text(revision_key(repo, commit))

    def signature(self, repo: str, commit: str) -> str | None:
        return self._read_text(revision_key(repo, commit) + ".sig")

    def put_signature(self, repo: str, commit: str, document: str) -> None:
        self._write_text(revision_key(repo, commit) + ".sig", document, "application/json")

    def ref(self, repo: str, name: str) -> str | None:
        return self._read_text(ref_key(repo, name))

    def put_ref(self, repo: str, name: str, commit: str) -> None:
        self._write_text(ref_key(repo, name), commit)

    def repos(self) -> list[str]:
        prefixes = set()
        for key in self._keys("repos/"):
            parts = key.split("/")
            if len(parts) >= 4:
                prefixes.add(f"{parts[1]}/{parts[2]}")
        return sorted(prefixes)

    def refs(self, repo: str) -> dict[str, str]:
        prefix = f"repos/{check_repo(repo)}/refs/"
        return {key[len(prefix):]: self._read_text(key) or "" for key in self._keys(prefix)}

    def commits(self, repo: str) -> list[str]:
        prefix = f"repos/{check_repo(repo)}/revisions/"
        return sorted(key[len(prefix):].removesuffix(".json") for key in self._keys(prefix) if key.endswith(".json"))

    # -- helpers -----------------------------------------------------------------------

    def _keys(self, prefix: str) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield item["Key"]

    def _read_text(self, key: str) -> str | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read().decode("utf-8").strip()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise StoreError(f"s3://{self.bucket}/{key}: {exc}") from exc

    def _write_text(self, key: str, text: str, content_type: str = "text/plain") -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=text.encode("utf-8"), ContentType=content_type,
                               CacheControl="no-cache")  # fmt: skip
