"""The repo's container images, built, started and pushed for real (``platformctl image …``).

Each image is built from its own Dockerfile, unchanged for Docker users: with ``docker buildx``
where a Docker engine answers, else with Debian's ``buildah`` (chroot isolation, vfs storage: no
daemon, no overlay, no user namespaces). Version and revision come from the same sources as the
Pulumi build (``components.inference.image``).

Where the Dockerfile's base image can't be pulled (no registry, an air-gapped site), a local base
is made once from Debian packages (``debootstrap --variant=minbase``) and reused. Stages that copy
from another registry's image get a stand-in, and the build says which and what that leaves
unproven.

The build host's pip configuration (index, extra indexes, find-links, CA) reaches ``pip`` inside
the build as a build secret (``pip.conf``, ``build-ca``) and a bind-mounted named context
(``pip-local``) — never as a layer.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated
from urllib.parse import unquote, urlparse

from components.inference import image as identity

ENGINE_ENV = "PLATFORM_IMAGE_ENGINE"  # docker | buildah: skip detection
BASE_ENV = "PLATFORM_IMAGE_BASE"  # auto | registry | local
LOCAL_BASE = "localhost/platform/python-base:bookworm"
DEBIAN_SUITE = "bookworm"  # the suite of the Dockerfiles' python:*-slim-bookworm base
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates", "python-is-python3")
BUILDAH = ("buildah", "--storage-driver", "vfs")
PIP_LOCAL_TARGET = "/pip-local"  # where the Dockerfiles mount the pip-local context
SECRET_TARGET = "/run/secrets"  # BuildKit's and buildah's default secret directory
BUILD_PIP_KEYS = ("index-url", "extra-index-url", "find-links", "trusted-host", "cert", "client-cert", "no-index")
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "platform-images"


class ImageBuildError(Exception):
    """A build, run or push could not be done; the message says what and why."""


@dataclass(frozen=True)
class ForeignStage:
    """A stage that copies from another registry's image (not a Python base)."""

    build_arg: str  # the ARG naming the image
    stage: str  # the stage's name in the Dockerfile
    paths: tuple[str, ...]  # what later stages copy from it
    unproven: str  # what a stand-in leaves unproven


@dataclass(frozen=True)
class ImageSource:
    name: str
    context: str  # directory of the Dockerfile and its context, relative to the repo root
    repository: str  # local repository name
    versioned: bool  # carries inference_image/VERSION; else tagged by source id as the Pulumi build does
    foreign_stages: tuple[ForeignStage, ...] = ()


IMAGES: dict[str, ImageSource] = {
    "inference": ImageSource("inference", identity.IMAGE_DIR, "localhost/platform/inference-server", versioned=True),
    "mirror": ImageSource(
        "mirror",
        "components/mirror",
        "localhost/platform/model-mirror",
        versioned=False,
        foreign_stages=(
            ForeignStage(
                "LAMBDA_ADAPTER_IMAGE",
                "lambda-adapter",
                ("/lambda-adapter",),
                "the Lambda Web Adapter extension (/opt/extensions/lambda-adapter is a stand-in that exits 1): "
                "the CloudFront origin's Lambda start-up is proven only by a deployment",
            ),
        ),
    ),
}


@dataclass(frozen=True)
class BuiltImage:
    source: ImageSource
    tags: tuple[str, ...]
    image_id: str
    digest: str  # the manifest digest in local storage (a push may re-compress: see push())
    base: str  # the PYTHON_IMAGE it was built on
    stand_ins: tuple[str, ...]  # notes on replaced foreign stages

    @property
    def ref(self) -> str:
        return self.tags[-1]


# --- pure decisions -------------------------------------------------------------------------


def image_tags(source: ImageSource, version: str | None, revision: identity.SourceRevision) -> tuple[str, ...]:
    """The tags the Pulumi build pushes, on the local repository (most specific last)."""
    if source.versioned:
        assert version is not None
        return tuple(identity.image_tags(source.repository, version, revision))
    suffix = f"{revision.short_id}-dirty" if revision.dirty else revision.short_id
    return (f"{source.repository}:{suffix}",)


def build_args(
    source: ImageSource, version: str | None, revision: identity.SourceRevision, variant: str
) -> dict[str, str]:
    """The build args the Pulumi build passes (components/inference, components/mirror)."""
    if source.versioned:
        assert version is not None
        return {"VARIANT": variant, "VERSION": version, "REVISION": revision.short_id}
    return {"REVISION": revision.short_id}


def dockerfile_default(dockerfile_text: str, arg: str) -> str | None:
    """The default of ``ARG <arg>=…`` in a Dockerfile (the base the Dockerfile names)."""
    for line in dockerfile_text.splitlines():
        words = line.split(maxsplit=1)
        if len(words) == 2 and words[0].upper() == "ARG" and words[1].startswith(f"{arg}="):
            return words[1].split("=", 1)[1].strip()
    return None


@dataclass(frozen=True)
class PipBuildConfig:
    """pip's configuration as the build sees it: a pip.conf, the CA it names, the local dirs it mounts."""

    conf: str  # the pip.conf text (paths inside the build)
    ca_file: Path | None  # the host CA bundle, passed as the build-ca secret
    local_dirs: tuple[tuple[Path, str], ...]  # (host directory, path under the pip-local context)
    dropped: tuple[str, ...]  # settings that could not be carried in, and why


def _split(value: str) -> list[str]:
    return [item for item in value.split() if item]


def _local_path(location: str) -> Path | None:
    """A local directory or file:// URL as a path; None for a remote URL."""
    parsed = urlparse(location)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    return Path(location) if parsed.scheme == "" else None


def pip_build_config(settings: dict[str, str]) -> PipBuildConfig:
    """Translate the host's effective pip settings (``key -> value``) into the build's.

    Remote indexes pass through. Local ones (find-links directories, ``file://`` indexes) are
    mounted under the pip-local context at their own absolute path, so relative links in a
    PEP 503 index (``../../files/…``) still resolve: an index ``<root>/simple`` brings ``<root>``.
    The CA bundle becomes the ``build-ca`` secret. Host-only settings (constraints, timeouts:
    the Dockerfile sets its own) stay behind.
    """
    local: dict[Path, str] = {}
    host_only = sorted(key for key in settings if key not in BUILD_PIP_KEYS)
    dropped = (
        [f"host-only settings left out (the Dockerfile sets its own): {', '.join(host_only)}"] if host_only else []
    )

    def mount(path: Path, is_index: bool) -> str:
        root = path.parent if is_index and path.name == "simple" else path
        inside = f"{PIP_LOCAL_TARGET}{root.as_posix()}"
        local[root] = root.as_posix().lstrip("/")
        return inside + ("/simple" if root != path else "")

    def translate(location: str, is_index: bool) -> str | None:
        path = _local_path(location)
        if path is None:
            return location
        if not path.is_dir():
            dropped.append(f"{location}: not a directory on this machine, left out")
            return None
        inside = mount(path.resolve(), is_index)
        return f"file://{inside}" if is_index else inside

    lines = ["[global]"]
    for key in ("index-url", "extra-index-url", "find-links"):
        if key not in settings:
            continue
        values = [v for v in (translate(item, key != "find-links") for item in _split(settings[key])) if v]
        if values:
            lines.append(f"{key} = " + "\n    ".join(values))
    for key in ("trusted-host", "no-index"):
        if key in settings:
            lines.append(f"{key} = {settings[key]}")
    ca = None
    if "cert" in settings:
        ca = Path(settings["cert"])
        if ca.is_file():
            lines.append(f"cert = {SECRET_TARGET}/build-ca")
        else:
            dropped.append(f"cert {ca}: no such file, left out")
            ca = None
    if "client-cert" in settings:
        dropped.append("client-cert: a client key is not passed into builds; use an index token instead")
    return PipBuildConfig("\n".join(lines) + "\n", ca, tuple(sorted(local.items())), tuple(dropped))


def effective_pip_settings(python: str) -> dict[str, str]:
    """pip's settings on this host, as ``pip config list`` resolves them (env over install over global)."""
    result = subprocess.run([python, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ImageBuildError(f"cannot read pip's configuration: {result.stderr.strip()}")
    scopes: dict[str, dict[str, str]] = {}
    for line in result.stdout.splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        scope, _, name = key.rpartition(".")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        scopes.setdefault(scope, {})[name] = value.encode().decode("unicode_escape")
    merged: dict[str, str] = {}
    for scope in ("global", "install", ":env:"):  # lowest precedence first
        merged |= scopes.get(scope, {})
    return merged


# --- engines --------------------------------------------------------------------------------


def _run(
    argv: Sequence[str],
    *,
    check_what: str,
    capture: bool = True,
    timeout: float | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(list(argv), capture_output=capture, text=True, check=False, timeout=timeout, env=env)
    except FileNotFoundError as exc:
        raise ImageBuildError(f"{check_what}: {argv[0]} is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise ImageBuildError(f"{check_what}: {argv[0]} did not answer within {timeout:.0f} s") from exc
    if result.returncode != 0:
        detail = (result.stderr or result.stdout or "").strip().splitlines()[-12:] if capture else []
        raise ImageBuildError(
            f"{check_what} failed (exit {result.returncode})" + (":\n" + "\n".join(detail) if detail else "")
        )
    return result


def detect_engine() -> str:
    """``docker`` where a Docker engine answers, else ``buildah``; ``$PLATFORM_IMAGE_ENGINE`` decides if set."""
    chosen = os.environ.get(ENGINE_ENV)
    if chosen:
        if chosen not in ("docker", "buildah"):
            raise ImageBuildError(f"{ENGINE_ENV}={chosen!r}: expected docker or buildah")
        return chosen
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, check=False)
        if probe.returncode == 0:
            return "docker"
    if shutil.which("buildah"):
        return "buildah"
    raise ImageBuildError(
        "no image builder: neither a Docker engine (docker info) nor buildah (apt-get install buildah) is available"
    )


def image_exists(engine: str, ref: str) -> bool:
    argv = ["docker", "image", "inspect", ref] if engine == "docker" else [*BUILDAH, "inspect", "--type", "image", ref]
    return subprocess.run(argv, capture_output=True, check=False).returncode == 0


def registry_reachable(engine: str, ref: str, timeout: float = 20) -> bool:
    """Whether the Dockerfile's own base can be resolved from its registry right now."""
    if engine == "docker":
        argv = ["docker", "manifest", "inspect", ref]
    else:
        if not shutil.which("skopeo"):
            return False
        argv = ["skopeo", "inspect", "--retry-times", "0", "--raw", f"docker://{ref}"]
    try:
        return subprocess.run(argv, capture_output=True, check=False, timeout=timeout).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def debian_mirror() -> str:
    """The Debian mirror apt uses here (``$DEBIAN_MIRROR`` wins): debootstrap fetches what apt can."""
    if os.environ.get("DEBIAN_MIRROR"):
        return os.environ["DEBIAN_MIRROR"]
    sources = Path("/etc/apt/sources.list.d/debian.sources")
    if sources.is_file():
        for block in sources.read_text().split("\n\n"):
            fields = dict(line.split(":", 1) for line in block.splitlines() if ":" in line and not line.startswith("#"))
            if "security" not in fields.get("Suites", "") and fields.get("URIs"):
                return fields["URIs"].split()[0].strip()
    legacy = Path("/etc/apt/sources.list")
    if legacy.is_file():
        for line in legacy.read_text().splitlines():
            words = line.split()
            if len(words) >= 3 and words[0] == "deb" and "security" not in line:
                return words[1] if not words[1].startswith("[") else words[2]
    return "http://deb.debian.org/debian"


def make_local_base(engine: str, log=print) -> str:
    """``localhost/platform/python-base:bookworm`` from Debian packages, made once and reused."""
    if image_exists(engine, LOCAL_BASE):
        log(f"local base {LOCAL_BASE}: reused")
        return LOCAL_BASE
    if not shutil.which("debootstrap"):
        raise ImageBuildError(
            "no registry for the base image and no debootstrap to make one (apt-get install debootstrap)"
        )
    mirror = debian_mirror()
    log(f"local base {LOCAL_BASE}: debootstrap --variant=minbase {DEBIAN_SUITE} from {mirror} (once)")
    with tempfile.TemporaryDirectory(prefix="platform-base-", dir=_work_dir()) as work:
        rootfs = Path(work) / "rootfs"
        _run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                DEBIAN_SUITE,
                str(rootfs),
                mirror,
            ],
            check_what=f"debootstrap of {DEBIAN_SUITE}",
        )
        # What an image never needs: downloaded packages, package lists, manuals, translations.
        for junk in (
            "var/cache/apt",
            "var/lib/apt/lists",
            "usr/share/man",
            "usr/share/locale",
            "usr/share/info",
            "var/log",
        ):
            target = rootfs / junk
            if target.exists():
                shutil.rmtree(target)
                target.mkdir(mode=0o755)
        for doc in (rootfs / "usr/share/doc").glob("*/*"):
            if doc.name != "copyright":  # licences stay
                shutil.rmtree(doc) if doc.is_dir() and not doc.is_symlink() else doc.unlink()
        python = _run(
            ["chroot", str(rootfs), "python3", "-c", "import platform; print(platform.python_version())"],
            check_what="python3 in the new base",
        ).stdout.strip()
        archive = Path(work) / "rootfs.tar"
        _run(
            ["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-cf", str(archive), "."],
            check_what="archiving the base",
        )
        labels = {
            "org.opencontainers.image.title": "python-base",
            "org.opencontainers.image.description": f"Debian {DEBIAN_SUITE} minbase with Python {python} "
            f"({', '.join(BASE_PACKAGES)}), made by debootstrap",
            "org.opencontainers.image.base.name": f"debian:{DEBIAN_SUITE}",
        }
        path_env = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        if engine == "docker":
            changes = [
                f"ENV {path_env}",
                "ENV LANG=C.UTF-8",
                'CMD ["python3"]',
                *(f"LABEL {k}={json.dumps(v)}" for k, v in labels.items()),
            ]
            _run(
                ["docker", "import", *(a for c in changes for a in ("--change", c)), str(archive), LOCAL_BASE],
                check_what="docker import of the base",
            )
        else:
            container = _run([*BUILDAH, "from", "scratch"], check_what="buildah from scratch").stdout.strip()
            try:
                _run([*BUILDAH, "add", container, str(archive), "/"], check_what="buildah add of the base")
                _run(
                    [
                        *BUILDAH,
                        "config",
                        "--env",
                        path_env,
                        "--env",
                        "LANG=C.UTF-8",
                        "--cmd",
                        "python3",
                        *(a for k, v in labels.items() for a in ("--label", f"{k}={v}")),
                        container,
                    ],
                    check_what="buildah config of the base",
                )
                _run([*BUILDAH, "commit", "--format", "docker", container, LOCAL_BASE], check_what="buildah commit")
            finally:
                subprocess.run([*BUILDAH, "rm", container], capture_output=True, check=False)
    log(f"local base {LOCAL_BASE}: Python {python}")
    return LOCAL_BASE


STAND_IN_DOCKERFILE = """\
FROM {base}
LABEL org.opencontainers.image.description="stand-in for {image}: not the real thing"
RUN {commands}
"""


def make_stand_in(engine: str, stage: ForeignStage, original: str, base: str) -> str:
    """A small local image with ``stage.paths`` as scripts that say they are stand-ins and exit 1."""
    ref = f"localhost/platform/stand-in-{stage.stage}:1"
    if image_exists(engine, ref):
        return ref
    commands = " && ".join(
        f"printf '%s\\n' '#!/bin/sh' 'echo \"{path}: stand-in for {original} (offline build)\" >&2' 'exit 1' > {path}"
        f" && chmod 0755 {path}"
        for path in stage.paths
    )
    with tempfile.TemporaryDirectory(prefix="platform-stand-in-", dir=_work_dir()) as work:
        (Path(work) / "Dockerfile").write_text(STAND_IN_DOCKERFILE.format(base=base, image=original, commands=commands))
        _engine_build(engine, Path(work), Path(work) / "Dockerfile", [ref], {}, secrets={}, contexts={})
    return ref


def _work_dir() -> str:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    return str(CACHE_DIR)


def _engine_build(
    engine: str,
    context: Path,
    dockerfile: Path,
    tags: Sequence[str],
    args: dict[str, str],
    *,
    secrets: dict[str, Path],
    contexts: dict[str, Path],
    iidfile: Path | None = None,
    quiet: bool = True,
) -> None:
    common = [
        *(a for k, v in args.items() for a in ("--build-arg", f"{k}={v}")),
        *(a for k, v in secrets.items() for a in ("--secret", f"id={k},src={v}")),
        *(a for k, v in contexts.items() for a in ("--build-context", f"{k}={v}")),
        *(a for t in tags for a in ("-t", t)),
        "-f",
        str(dockerfile),
    ]
    if iidfile is not None:
        common += ["--iidfile", str(iidfile)]
    if engine == "docker":
        argv = ["docker", "buildx", "build", "--load", "--provenance=false", "--progress=plain", *common, str(context)]
    else:
        # docker format: OCI image configs have no HEALTHCHECK, and Docker users expect it kept.
        argv = [*BUILDAH, "bud", "--isolation", "chroot", "--format", "docker", "--layers", *common, str(context)]
    _stream(argv, what=f"building {tags[0]}", quiet=quiet)


# A build step's first line: buildah's "[2/4] STEP 3/9: RUN …", buildx's plain "#7 [builder 3/6] RUN …".
_STEP_LINE = re.compile(r"^((\[\d+/\d+\] )?STEP \d+/\d+: |#\d+ \[[^\]]+\] )")


def _stream(argv: Sequence[str], what: str, quiet: bool, log=print) -> None:
    """Run a build, keeping its whole output in a log file; quiet shows only its steps (progress)."""
    log_path = Path(_work_dir()) / "last-build.log"
    started = time.monotonic()
    try:
        process = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except FileNotFoundError as exc:
        raise ImageBuildError(f"{what}: {argv[0]} is not installed") from exc
    tail: list[str] = []
    with log_path.open("w") as sink:
        assert process.stdout is not None
        for line in process.stdout:
            sink.write(line)
            tail = [*tail[-39:], line.rstrip()]
            step = _STEP_LINE.match(line)
            if not quiet or step:
                log(f"  {time.monotonic() - started:6.0f}s {line.rstrip()[:160]}" if quiet else line.rstrip())
    if process.wait() != 0:
        raise ImageBuildError(
            f"{what} failed (exit {process.returncode}); last lines (all in {log_path}):\n" + "\n".join(tail[-25:])
        )


def inspect_image(engine: str, ref: str) -> dict:
    """The image's Docker-style config: Env, Entrypoint, Cmd, User, WorkingDir, Healthcheck, Labels."""
    if engine == "docker":
        out = _run(["docker", "image", "inspect", "--format", "{{json .Config}}", ref], check_what=f"inspect {ref}")
    else:
        return _buildah_inspect(ref)["Docker"]["config"]
    return json.loads(out.stdout)


def image_id(engine: str, ref: str) -> str:
    if engine == "docker":
        return _run(
            ["docker", "image", "inspect", "--format", "{{.Id}}", ref], check_what=f"inspect {ref}"
        ).stdout.strip()
    return "sha256:" + _buildah_inspect(ref)["FromImageID"]


def local_digest(engine: str, ref: str) -> str:
    if engine == "docker":
        out = _run(["docker", "image", "inspect", "--format", "{{.Id}}", ref], check_what=f"inspect {ref}")
        return out.stdout.strip()
    out = _run([*BUILDAH, "images", "--no-trunc", "--format", "{{.Digest}}", ref], check_what=f"digest of {ref}")
    return out.stdout.split()[0]


def layer_ids(engine: str, ref: str) -> list[str]:
    """The image's layers as diff ids (uncompressed digests), base first."""
    if engine == "docker":
        if not image_exists(engine, ref):  # buildx pulled the base into its own cache, not the engine's
            _run(["docker", "pull", "--quiet", ref], check_what=f"pull {ref}")
        out = _run(
            ["docker", "image", "inspect", "--format", "{{json .RootFS.Layers}}", ref], check_what=f"inspect {ref}"
        )
    else:
        return [str(layer) for layer in _buildah_inspect(ref)["OCIv1"]["rootfs"]["diff_ids"]]
    return [str(layer) for layer in json.loads(out.stdout)]


def inspect_history(engine: str, ref: str) -> list[dict]:
    """The image's build history (created_by of each step), as a registry client sees it."""
    if engine == "docker":
        out = _run(
            ["docker", "image", "history", "--no-trunc", "--format", "{{json .}}", ref], check_what=f"history of {ref}"
        )
        return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    return _buildah_inspect(ref)["Docker"].get("history") or []


def _buildah_inspect(ref: str) -> dict:
    """``buildah inspect`` of an image, whole (buildah 1.28's --format has no json function)."""
    return json.loads(_run([*BUILDAH, "inspect", "--type", "image", ref], check_what=f"inspect {ref}").stdout)


# --- build ----------------------------------------------------------------------------------


@contextmanager
def pip_context(settings: dict[str, str], log=print) -> Iterator[tuple[dict[str, Path], dict[str, Path]]]:
    """Secrets and named contexts carrying this host's pip configuration into a build, removed after."""
    config = pip_build_config(settings)
    for note in config.dropped:
        log(f"pip configuration: {note}")
    with tempfile.TemporaryDirectory(prefix="platform-pip-", dir=_work_dir()) as work:
        conf = Path(work) / "pip.conf"
        conf.touch(mode=0o600)
        conf.write_text(config.conf)
        secrets: dict[str, Path] = {"pip.conf": conf}
        if config.ca_file is not None:
            secrets["build-ca"] = config.ca_file
        contexts: dict[str, Path] = {}
        if config.local_dirs:
            staging = Path(work) / "pip-local"
            for host, inside in config.local_dirs:
                _link_tree(host, staging / inside)
            contexts["pip-local"] = staging
            log(f"pip configuration: local {', '.join(str(h) for h, _ in config.local_dirs)} mounted read-only")
        yield secrets, contexts


def _link_tree(source: Path, target: Path) -> None:
    """Hard links where the file system allows (instant, no space), else a copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["cp", "-al", str(source), str(target)], capture_output=True, check=False).returncode != 0:
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target, symlinks=True)


def torch_from_find_links(settings: dict[str, str], version: str) -> bool:
    """Whether a find-links directory here holds the CPU torch wheel of ``version`` (offline CPU builds)."""
    for location in _split(settings.get("find-links", "")):
        path = _local_path(location)
        if path is not None and path.is_dir() and any(path.glob(f"torch-{version}+cpu-*.whl")):
            return True
    return False


def pinned_torch(root: Path) -> str:
    for line in (root / identity.IMAGE_DIR / "requirements.txt").read_text().splitlines():
        if line.startswith("torch=="):
            return line.split("==", 1)[1].strip()
    raise ImageBuildError(f"{identity.IMAGE_DIR}/requirements.txt pins no torch")


def build(
    name: str,
    root: Path,
    *,
    variant: str = "cpu",
    base: str = "auto",
    python: str = "python3",
    log=print,
    quiet: bool = True,
    rebuild: bool = False,
) -> BuiltImage:
    """Build one image of the repo; returns its tags, id and digest.

    An image already tagged with a committed tree id (not ``-dirty``) is that source exactly
    (the Dockerfile and the locks are in the tree), so it is reused unless ``rebuild``: with
    vfs even a build whose every step is cached takes minutes.
    """
    if name not in IMAGES:
        raise ImageBuildError(f"unknown image {name!r}: expected one of {', '.join(IMAGES)}")
    if base not in ("auto", "registry", "local"):
        raise ImageBuildError(f"base {base!r}: expected auto, registry or local")
    source = IMAGES[name]
    engine = detect_engine()
    try:
        version = identity.read_version(root) if source.versioned else None
        revision = identity.source_revision(root, source.context)
    except identity.ImageSourceError as exc:
        raise ImageBuildError(str(exc)) from exc
    context = root / source.context
    dockerfile = context / "Dockerfile"
    text = dockerfile.read_text(encoding="utf-8")
    args = build_args(source, version, revision, variant)

    registry_base = dockerfile_default(text, "PYTHON_IMAGE")
    if registry_base is None:
        raise ImageBuildError(f"{source.context}/Dockerfile: no ARG PYTHON_IMAGE=<image> default")
    use_local = base == "local" or (base == "auto" and not registry_reachable(engine, registry_base))
    stand_ins: list[str] = []
    chosen_base = registry_base
    if use_local:
        if base == "auto":
            log(f"{registry_base}: its registry cannot be reached; building on a local Debian base")
        chosen_base = make_local_base(engine, log)
        args["PYTHON_IMAGE"] = chosen_base
        for stage in source.foreign_stages:
            original = dockerfile_default(text, stage.build_arg) or "?"
            args[stage.build_arg] = make_stand_in(engine, stage, original, chosen_base)
            note = f"stage {stage.stage} ({original}) replaced by a stand-in: unproven: {stage.unproven}"
            stand_ins.append(note)
            log(f"NOTE {note}")

    settings = effective_pip_settings(python)
    if source.versioned and variant == "cpu" and torch_from_find_links(settings, pinned_torch(root)):
        args["TORCH_INDEX_URL"] = ""  # the CPU wheel is on this machine; PyTorch's index is not reachable
        log("torch: the CPU wheel from this machine's find-links directory")
    tags = image_tags(source, version, revision)
    if not revision.dirty and not rebuild and all(image_exists(engine, tag) for tag in tags):
        log(f"{tags[-1]}: already built from this tree, reused (--rebuild builds anew)")
        for tag in tags[:-1]:  # <version> may have moved to a later (dirty) build: back to this one
            argv = ["docker", "tag", tags[-1], tag] if engine == "docker" else [*BUILDAH, "tag", tags[-1], tag]
            _run(argv, check_what=f"tag {tag}")
        return BuiltImage(
            source, tags, image_id(engine, tags[-1]), local_digest(engine, tags[-1]), chosen_base, tuple(stand_ins)
        )
    log(f"building {', '.join(tags)} with {engine} on {chosen_base}")
    with pip_context(settings, log) as (secrets, contexts), tempfile.TemporaryDirectory(dir=_work_dir()) as work:
        iidfile = Path(work) / "iid"
        _engine_build(
            engine, context, dockerfile, tags, args, secrets=secrets, contexts=contexts, iidfile=iidfile, quiet=quiet
        )
        built_id = iidfile.read_text().strip()
    return BuiltImage(source, tags, built_id, local_digest(engine, tags[-1]), chosen_base, tuple(stand_ins))


def push(built: BuiltImage, registry: str, *, tls_verify: bool = True) -> tuple[str, str]:
    """Push the most specific tag to ``registry``; returns (pushed reference, registry digest)."""
    engine = detect_engine()
    repository = built.ref.split("/", 1)[1].rsplit(":", 1)[0]  # localhost/<repo>:tag -> <repo>
    tag = built.ref.rsplit(":", 1)[1]
    target = f"{registry}/{repository}:{tag}"
    with tempfile.TemporaryDirectory(dir=_work_dir()) as work:
        digest_file = Path(work) / "digest"
        if engine == "docker":
            _run(["docker", "tag", built.ref, target], check_what=f"tag {target}")
            _run(["docker", "push", target], check_what=f"push {target}")
            out = _run(
                ["docker", "image", "inspect", "--format", "{{json .RepoDigests}}", target],
                check_what=f"digest of {target}",
            )
            digests = [d.split("@", 1)[1] for d in json.loads(out.stdout) if d.startswith(f"{registry}/{repository}@")]
            if not digests:
                raise ImageBuildError(f"push {target}: the registry reported no digest")
            digest = digests[0]
        else:
            _run(
                [
                    *BUILDAH,
                    "push",
                    f"--tls-verify={str(tls_verify).lower()}",
                    "--digestfile",
                    str(digest_file),
                    built.ref,
                    f"docker://{target}",
                ],
                check_what=f"push {target}",
            )
            digest = digest_file.read_text().strip()
    return target, digest


def prune(engine: str, keep: Sequence[str], log=print) -> None:
    """Remove our repositories' images other than ``keep``, then every dangling image.

    Reclaims what old revisions hold (on vfs each layer is a full copy of its tree); the next
    build of a changed dependency set starts cold again.
    """
    if engine == "docker":
        listing = _run(["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"], check_what="docker image ls")
    else:
        listing = _run([*BUILDAH, "images", "--format", "{{.Name}}:{{.Tag}}"], check_what="buildah images")
    ours = {source.repository for source in IMAGES.values()}
    stale = [ref for ref in listing.stdout.split() if ref.rsplit(":", 1)[0] in ours and ref not in keep]
    for ref in stale:
        subprocess.run(["docker", "rmi", ref] if engine == "docker" else [*BUILDAH, "rmi", ref], capture_output=True)
    subprocess.run(
        ["docker", "image", "prune", "--force"] if engine == "docker" else [*BUILDAH, "rmi", "--prune"],
        capture_output=True,
    )
    log(f"pruned {len(stale)} image(s) of older revisions and the dangling layers")


def current_tags(root: Path) -> list[str]:
    """The tags a build of the working tree would carry, for every image."""
    tags: list[str] = []
    for source in IMAGES.values():
        version = identity.read_version(root) if source.versioned else None
        tags += image_tags(source, version, identity.source_revision(root, source.context))
    return tags


def describe(built: BuiltImage) -> dict[str, object]:
    return {
        "image": built.source.name,
        "tags": list(built.tags),
        "id": built.image_id,
        "digest": built.digest,
        "base": built.base,
        "standIns": list(built.stand_ins),
    }


# --- CLI ------------------------------------------------------------------------------------

import typer  # noqa: E402  (the build logic above needs only the standard library)

app = typer.Typer(
    help="Build and push the repo's container images (docker buildx, else buildah).",
    no_args_is_help=True,
    add_completion=False,
)


@app.command("build")
def build_command(
    name: Annotated[str, typer.Argument(help=f"The image: {' or '.join(IMAGES)}.")],
    variant: Annotated[str, typer.Option(help="inference only: cpu or cuda.")] = "cpu",
    base: Annotated[
        str,
        typer.Option(
            envvar=BASE_ENV,
            help="auto: the Dockerfile's base if its registry answers, else a local Debian base; registry; local.",
        ),
    ] = "auto",
    push_to: Annotated[
        str | None, typer.Option("--push", metavar="REGISTRY", help="Also push to this registry (host:port).")
    ] = None,
    tls_verify: Annotated[bool, typer.Option(help="Verify the registry's TLS certificate.")] = True,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Also write the result as JSON here.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show all of the builder's output.")] = False,
    rebuild: Annotated[bool, typer.Option(help="Build even if this committed tree's image exists.")] = False,
) -> None:
    """Build an image from its own Dockerfile; print its tags, id and digest (and the pushed digest)."""
    from platformctl.common import EXIT_PROGRAM, fail
    from platformctl.project import find_project

    if variant not in ("cpu", "cuda"):
        raise typer.BadParameter(f"--variant {variant!r}: expected cpu or cuda")
    root = find_project(None).root
    started = time.monotonic()
    try:
        built = build(name, root, variant=variant, base=base, python=sys.executable, quiet=not verbose, rebuild=rebuild)
        result = describe(built)
        if push_to:
            pushed, digest = push(built, push_to, tls_verify=tls_verify)
            result |= {"pushed": pushed, "pushedDigest": digest, "pinned": f"{pushed.rsplit(':', 1)[0]}@{digest}"}
    except ImageBuildError as exc:
        raise fail(str(exc), EXIT_PROGRAM) from None
    for tag in built.tags:
        print(f"tag     {tag}")
    print(f"id      {built.image_id}")
    print(f"digest  {built.digest}")
    print(f"took    {time.monotonic() - started:.0f} s")
    if push_to:
        print(f"pushed  {result['pinned']}")
    if output is not None:
        output.write_text(json.dumps(result, indent=2) + "\n")


@app.command("prune")
def prune_command(
    below_free_gib: Annotated[float, typer.Option(help="Only when the builder's disk has less free space.")] = 0,
) -> None:
    """Remove image revisions other than the working tree's, and dangling layers (frees disk)."""
    from platformctl.common import EXIT_PROGRAM, fail
    from platformctl.project import find_project

    storage = Path("/var/lib/containers/storage")
    where = storage if storage.exists() else Path("/")
    free = shutil.disk_usage(where).free / 2**30
    if below_free_gib and free >= below_free_gib:
        print(f"{free:.0f} GiB free at {where}: nothing pruned")
        return
    try:
        prune(detect_engine(), current_tags(find_project(None).root))
    except (ImageBuildError, identity.ImageSourceError) as exc:
        raise fail(str(exc), EXIT_PROGRAM) from None
