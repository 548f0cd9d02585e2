"""The inference image's identity: version, source revision, tags, digest reference (pure)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

IMAGE_DIR = "inference_image"
VERSION_FILE = f"{IMAGE_DIR}/VERSION"  # the one source: the server's package version reads it too
REVISION_OVERRIDE_ENV = "PLATFORM_IMAGE_REVISION"
UNCOMMITTED = "0000000"  # the source id of a directory HEAD does not have yet
_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


class ImageSourceError(Exception):
    """The image's version or source revision cannot be determined."""


@dataclass(frozen=True)
class SourceRevision:
    """The git object id of an image's source directory at HEAD, and whether the working copy differs.

    A tree id, not a commit: every commit that leaves the image source unchanged has the same
    one (infra-only commits don't rebuild or re-push), and it is the same in shallow and full
    clones. ``git log --find-object=<id>`` finds the commits that introduced it.
    """

    short_id: str
    dirty: bool


def read_version(root: Path) -> str:
    path = root / VERSION_FILE
    try:
        version = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ImageSourceError(f"{VERSION_FILE}: cannot read the image version ({exc.strerror})") from exc
    if not _SEMVER.fullmatch(version):
        raise ImageSourceError(f"{VERSION_FILE}: {version!r} is not a semantic version (MAJOR.MINOR.PATCH)")
    return version


def source_revision(root: Path, directory: str = IMAGE_DIR) -> SourceRevision:
    override = os.environ.get(REVISION_OVERRIDE_ENV)
    if override:
        if not re.fullmatch(r"[0-9a-f]{7,40}", override):
            raise ImageSourceError(f"{REVISION_OVERRIDE_ENV}={override!r}: expected a hex git object id")
        return SourceRevision(override[:7], dirty=False)

    def git(*args: str) -> str:
        result = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ImageSourceError(
                f"cannot determine the image source revision (git {' '.join(args)}: "
                f"{result.stderr.strip() or 'failed'}); run from a git checkout or set {REVISION_OVERRIDE_ENV}"
            )
        return result.stdout.strip()

    try:
        dirty = bool(git("status", "--porcelain", "--", directory))
        try:
            tree = git("rev-parse", "--short=7", f"HEAD:{directory}")
        except ImageSourceError:
            if not dirty:
                raise
            return SourceRevision(UNCOMMITTED, dirty=True)  # a new directory, not committed yet
    except FileNotFoundError as exc:  # no git binary
        raise ImageSourceError(f"git is not installed; set {REVISION_OVERRIDE_ENV} to the image source id") from exc
    return SourceRevision(tree, dirty)


def release_tag(version: str, revision: SourceRevision) -> str:
    """``<version>-<source id>`` (``-dirty`` when built from uncommitted files): names one build's source."""
    suffix = f"{revision.short_id}-dirty" if revision.dirty else revision.short_id
    return f"{version}-{suffix}"


def image_tags(repository_url: str, version: str, revision: SourceRevision) -> list[str]:
    """``<version>`` and :func:`release_tag`."""
    return [f"{repository_url}:{version}", f"{repository_url}:{release_tag(version, revision)}"]


def cache_ref(cache_repository_url: str, variant: str) -> str:
    return f"{cache_repository_url}:buildcache-{variant}"


def pinned_ref(repository_url: str, digest: str) -> str:
    """``<repository>@sha256:...``: what runs can't change under a re-pushed tag."""
    if not _DIGEST.fullmatch(digest or ""):
        raise ValueError(f"image digest {digest!r} is not sha256:<64 hex>; the image was not pushed")
    return f"{repository_url}@{digest}"


def lifecycle_policy(keep_versions: int, untagged_expiry_days: int) -> str:
    """ECR lifecycle: untagged images expire after N days; only the newest N versions stay.

    Every push carries both tags, so counting ``<version>``-tagged images counts versions.
    Rule priority matters: untagged first, then any tagged image beyond the newest N.
    """
    return json.dumps({
        "rules": [
            {"rulePriority": 1, "description": f"expire untagged images after {untagged_expiry_days} days",
             "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days",
                           "countNumber": untagged_expiry_days},
             "action": {"type": "expire"}},
            {"rulePriority": 2, "description": f"keep the newest {keep_versions} versions",
             "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": keep_versions},
             "action": {"type": "expire"}},
        ]
    })  # fmt: skip


def cache_lifecycle_policy() -> str:
    """Build-cache repository: only the current cache manifests matter; old layers go after a week."""
    return json.dumps({"rules": [{
        "rulePriority": 1, "description": "expire superseded cache images",
        "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 7},
        "action": {"type": "expire"}}]})  # fmt: skip
