"""Start a built image's entrypoint the way Kubernetes does, and look inside the image.

Two engines, one interface: ``buildah run --isolation chroot`` (no daemon: this machine, CI) or
``docker run`` (GitHub-hosted runners). Either way the process gets the image's own ENV,
WORKDIR and USER, the host's loopback (the tests talk to it there), and a few env overrides the
way a pod spec sets them (PORT, HOST).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import tarfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from platformctl.images import BUILDAH, inspect_image


@dataclass
class Started:
    process: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


class Container:
    """A container of ``ref``: its entrypoint started once, commands run beside it."""

    def __init__(self, engine: str, ref: str, workdir: Path) -> None:
        self.engine = engine
        self.ref = ref
        self.config = inspect_image(engine, ref)
        self.user = self.config.get("User") or "0"
        self.name = f"smoke-{uuid.uuid4().hex[:10]}"
        self._workdir = workdir
        self._started: list[Started] = []
        if engine == "buildah":
            created = subprocess.run([*BUILDAH, "from", "--name", self.name, ref], capture_output=True, text=True)
            assert created.returncode == 0, created.stderr

    # --- what the image says ---------------------------------------------------------------

    @property
    def entrypoint(self) -> list[str]:
        return list(self.config.get("Entrypoint") or [])

    @property
    def cmd(self) -> list[str]:
        return list(self.config.get("Cmd") or [])

    @property
    def env(self) -> dict[str, str]:
        return dict(item.split("=", 1) for item in self.config.get("Env") or [])

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.config.get("Labels") or {})

    @property
    def healthcheck(self) -> list[str]:
        test = (self.config.get("Healthcheck") or {}).get("Test") or []
        assert test and test[0] == "CMD", f"{self.ref}: HEALTHCHECK is {test!r}, expected the exec (CMD) form"
        return test[1:]

    # --- running it ------------------------------------------------------------------------

    def start(self, args: Sequence[str] | None = None, env: dict[str, str] | None = None) -> Started:
        """The entrypoint with ``args`` (default: the image's CMD), as the image's user."""
        argv = [*self.entrypoint, *(self.cmd if args is None else args)]
        log = self._workdir / f"{self.name}-{len(self._started)}.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                self._argv(argv, env or {}, detached=True),
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started = Started(process, log)
        self._started.append(started)
        return started

    def start_as_pod(self, args: Sequence[str], env: dict[str, str], writable: Sequence[str], uid: int) -> Started:
        """The entrypoint as the Deployment runs it: read-only root file system, an emptyDir at each
        of ``writable``, uid and gid ``uid``, no capabilities, no privilege escalation."""
        argv = [*self.entrypoint, *args]
        environment = {**self.env, **env}
        log = self._workdir / f"{self.name}-pod-{len(self._started)}.log"
        if self.engine == "docker":
            command = [
                "docker",
                "run",
                "--rm",
                "--name",
                self.name,
                "--network",
                "host",
                "--read-only",
                *(flag for path in writable for flag in ("--tmpfs", f"{path}:mode=1777")),
                "--user",
                f"{uid}:{uid}",
                "--cap-drop",
                "ALL",
                "--security-opt",
                "no-new-privileges",
                *(flag for key, value in env.items() for flag in ("--env", f"{key}={value}")),
                "--entrypoint",
                argv[0],
                self.ref,
                *argv[1:],
            ]
        else:
            mounted = subprocess.run([*BUILDAH, "mount", self.name], capture_output=True, text=True, check=True)
            root = mounted.stdout.strip()
            workdir = self.config.get("WorkingDir") or "/"
            # A private mount namespace: the root bound read-only over itself, tmpfs emptyDirs,
            # /proc and /dev; then chroot dropping to the pod's uid (no capabilities remain).
            script = "\n".join(
                [
                    "set -e",
                    f'mount --bind "{root}" "{root}"',
                    f'mount -o remount,bind,ro "{root}"',
                    *(f'mount -t tmpfs -o mode=1777 tmpfs "{root}{path}"' for path in writable),
                    f'mount -t proc proc "{root}/proc"',
                    f'mount --rbind /dev "{root}/dev"',
                    f'exec setpriv --no-new-privs chroot --userspec={uid}:{uid} --groups= "{root}" '
                    + " ".join(
                        shlex.quote(a)
                        for a in [
                            "/usr/bin/env",
                            "-i",
                            "-C",
                            workdir,
                            *(f"{k}={v}" for k, v in environment.items()),
                            *argv,
                        ]
                    ),
                ]
            )
            command = ["unshare", "--mount", "--propagation", "private", "--fork", "sh", "-c", script]
        with log.open("wb") as sink:
            process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
        started = Started(process, log)
        self._started.append(started)
        return started

    def exec(
        self, argv: Sequence[str], env: dict[str, str] | None = None, user: str | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess:
        """A command inside the container (beside a started entrypoint, if any)."""
        return subprocess.run(
            self._argv(list(argv), env or {}, detached=False, user=user),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def _argv(self, argv: list[str], env: dict[str, str], detached: bool, user: str | None = None) -> list[str]:
        user = user or self.user
        env_flags = [flag for key, value in env.items() for flag in ("--env", f"{key}={value}")]
        if self.engine == "buildah":
            return [*BUILDAH, "run", "--isolation", "chroot", "--user", user, *env_flags, self.name, "--", *argv]
        running = any(started.process.poll() is None for started in self._started)
        if detached or not running:  # docker exec needs a running container; else a one-off one
            name = ["--name", self.name] if detached else []
            return [
                "docker",
                "run",
                "--rm",
                *name,
                "--network",
                "host",
                "--user",
                user,
                *env_flags,
                "--entrypoint",
                argv[0],
                self.ref,
                *argv[1:],
            ]
        return ["docker", "exec", "--user", user, *env_flags, self.name, *argv]

    def stop(self, started: Started, needle: str, timeout: float = 60) -> int:
        """SIGTERM to the entrypoint's process (the one whose command line holds ``needle``), as
        the kubelet sends it; the run's exit status once it has drained (docker: 143; buildah
        reports a child ended by a signal as 1, "subprocess exited on terminated")."""
        if started.process.poll() is None:
            if self.engine == "docker":
                subprocess.run(["docker", "kill", "--signal", "TERM", self.name], capture_output=True)
            else:  # one process table with chroot isolation: signal this run's server, not buildah
                pids = _entrypoint_pids(started.process.pid, needle)
                assert pids, f"no process of {needle!r} under {started.process.pid} to stop"
                for pid in pids:
                    os.kill(pid, signal.SIGTERM)
            try:
                started.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(started.process.pid, signal.SIGKILL)
                started.process.wait(10)
        return started.process.returncode

    def remove(self) -> None:
        for started in self._started:
            if started.process.poll() is None:
                os.killpg(started.process.pid, signal.SIGKILL)
                started.process.wait(10)
        if self.engine == "buildah":
            subprocess.run([*BUILDAH, "rm", self.name], capture_output=True)
        else:
            subprocess.run(["docker", "rm", "-f", self.name], capture_output=True)


def _entrypoint_pids(root_pid: int, needle: str) -> list[int]:
    """The processes below ``root_pid`` (a ``buildah run`` or ``unshare``) running the entrypoint:
    command line holding ``needle``, not one of buildah's or unshare's own processes."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry))
    found, queue = [], list(children.get(root_pid, []))
    while queue:
        pid = queue.pop()
        queue += children.get(pid, [])
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not os.path.basename(argv[0].decode(errors="replace")).startswith(
            ("buildah", "unshare")
        ) and needle.encode() in b" ".join(argv):
            found.append(pid)
    return found


def process_uids(container: Container, needle: str) -> dict[int, tuple[int, int]]:
    """pid -> (real, effective) uid of the container's processes whose command line holds ``needle``,
    read from /proc inside the container. With chroot isolation the process table is the host's:
    ``buildah run``, its buildah-chroot-* helpers and ``unshare`` around a process don't count."""
    script = (
        "import json, os, sys\n"
        "found = {}\n"
        "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
        "    try:\n"
        "        argv = open(f'/proc/{pid}/cmdline', 'rb').read().split(b'\\0')\n"
        "        status = open(f'/proc/{pid}/status').read()\n"
        "    except OSError:\n"
        "        continue\n"
        "    cmd = b' '.join(argv).decode(errors='replace')\n"
        "    if os.path.basename(argv[0].decode(errors='replace')).startswith(('buildah', 'docker', 'unshare')):\n"
        "        continue\n"
        "    if sys.argv[1] in cmd and 'import json, os, sys' not in cmd:\n"
        "        uid = next(line.split()[1:3] for line in status.splitlines() if line.startswith('Uid:'))\n"
        "        found[pid] = [int(u) for u in uid]\n"
        "print(json.dumps(found))\n"
    )
    result = container.exec(["python", "-c", script, needle], user="0")
    assert result.returncode == 0, result.stderr
    return {int(pid): tuple(uids) for pid, uids in json.loads(result.stdout).items()}


@dataclass(frozen=True)
class Layer:
    digest: str
    path: Path


def export_layers(engine: str, ref: str, target: Path) -> tuple[dict, list[Layer]]:
    """The image's manifest and its layer tarballs, exactly as they would be pushed."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if engine == "buildah":
        result = subprocess.run([*BUILDAH, "push", ref, f"dir:{target}"], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        manifest = json.loads((target / "manifest.json").read_text())
        return manifest, [
            Layer(layer["digest"], target / layer["digest"].split(":", 1)[1]) for layer in manifest["layers"]
        ]
    archive = target / "image.tar"
    subprocess.run(["docker", "save", "-o", str(archive), ref], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")
    manifest = json.loads((target / "manifest.json").read_text())[0]
    return manifest, [Layer(name, target / name) for name in manifest["Layers"]]


def layer_members(layer: Layer) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo]]:
    with tarfile.open(layer.path, mode="r:*") as tar:
        for member in tar:
            yield tar, member
