"""Run the real ``__main__.py`` under Pulumi's mock monitor and record what it declares.

This is a *static* plan: every resource the program declares for a stack's config,
with its inputs as the engine would receive them, in preview mode. Values that only
AWS can know (ids, ARNs, the account id) are unknown, exactly as in ``pulumi
preview``. There is no state, so it is not a diff: what already exists is unknown.
"""

from __future__ import annotations

import asyncio
import os
import runpy
import sys
import traceback
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Iterator

from google.protobuf import json_format
from pulumi.runtime import config as runtime_config
from pulumi.runtime import mocks, rpc, settings, stack as runtime_stack

from components.config import ConfigError
from platformctl.project import Project, read_stack_config

UNKNOWN = "[unknown]"  # computed at deploy time (pulumi preview shows these as output<T>)
SECRET = "[secret]"
PLACEHOLDER_ACCOUNT_ID = "000000000000"  # what getCallerIdentity answers offline
PLACEHOLDER_ELB_ACCOUNT_ID = "000000000001"  # what elb.getServiceAccount answers offline
PLACEHOLDER_SSM_VALUE = "offline-plan-ssm-placeholder"  # what getParameter answers offline

_SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
_RESOURCE_SIG = "5cf8f73096256a8f31e491e813e4eb8e"
_ASSET_SIG = "c44067f5952c0a294b673a41bacd8c17"
_ARCHIVE_SIG = "0def7320c3a5731c473e5ecbe6d01bc7"
_STACK_TYPE = "pulumi:pulumi:Stack"


class PlanError(Exception):
    """The program failed while being planned (not a config error)."""


@dataclass
class PlannedResource:
    urn: str
    type: str
    name: str
    parent: str | None
    provider: str | None
    custom: bool
    inputs: dict[str, Any]
    dependencies: dict[str, list[str]]
    depends_on: list[str] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)

    @property
    def is_provider(self) -> bool:
        return self.type.startswith("pulumi:providers:")

    def to_json(self) -> dict[str, Any]:
        return {
            "urn": self.urn,
            "type": self.type,
            "name": self.name,
            "parent": self.parent,
            "provider": self.provider,
            "custom": self.custom,
            "inputs": self.inputs,
            "dependencies": self.dependencies,
            "dependsOn": self.depends_on,
            **({"outputs": self.outputs} if self.outputs else {}),
        }


@dataclass
class Plan:
    project: str
    stack: str
    stack_file: str
    resources: list[PlannedResource]
    stack_outputs: dict[str, Any]
    _index: dict[str, PlannedResource] = field(default_factory=dict, repr=False, compare=False)

    def by_urn(self) -> dict[str, PlannedResource]:
        if len(self._index) != len(self.resources):  # built once; a plan is not changed after run
            self._index = {r.urn: r for r in self.resources}
        return self._index

    def of_type(self, type_token: str) -> list[PlannedResource]:
        return [r for r in self.resources if r.type == type_token]

    def named(self, name: str) -> PlannedResource:
        matches = [r for r in self.resources if r.name == name]
        if len(matches) != 1:
            raise KeyError(f"{len(matches)} resources are named {name!r}")
        return matches[0]

    def component_of(self, resource: PlannedResource) -> PlannedResource | None:
        """The top-level component (child of the stack) that ``resource`` belongs to."""
        urns = self.by_urn()
        current: PlannedResource | None = resource
        while current is not None and current.parent is not None and current.parent in urns:
            current = urns[current.parent]
        return current if current is not None and not current.custom else None

    def to_json(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "stack": self.stack,
            "stackFile": self.stack_file,
            "kind": "static-offline-plan",
            "note": (
                "Every resource the program declares for this stack's config, with inputs as the "
                "engine receives them in a preview. Not a diff against deployed state. "
                f"{UNKNOWN} marks values computed at deploy time; {SECRET} marks secrets."
            ),
            "resources": [r.to_json() for r in self.resources],
            "outputs": self.stack_outputs,
        }


def wire_to_plain(value: Any) -> Any:
    """Wire values (protobuf JSON) to plain JSON: secrets masked, unknowns marked."""
    if isinstance(value, dict):
        sig = value.get(rpc._special_sig_key)
        if sig == _SECRET_SIG:
            return SECRET
        if sig == _RESOURCE_SIG:
            return value.get("urn")
        if sig == _ASSET_SIG:
            return {"asset": value.get("path") or value.get("uri") or "<text>"}
        if sig == _ARCHIVE_SIG:
            return {"archive": value.get("path") or value.get("uri") or "<assets>"}
        return {key: wire_to_plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [wire_to_plain(item) for item in value]
    if value == rpc.UNKNOWN:
        return UNKNOWN
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class _PlanMocks(mocks.Mocks):
    """Preview semantics: a new resource's outputs are its inputs; ids are unknown."""

    def new_resource(self, args: mocks.MockResourceArgs) -> tuple[str | None, dict]:
        return "", args.inputs

    def call(self, args: mocks.MockCallArgs) -> tuple[dict, list[tuple[str, str]] | None]:
        # A real preview runs invokes against the account. Offline there is none, and
        # invoke results cannot be unknown, so they are fixed placeholders (an account
        # id AWS never issues). Anything else must be added deliberately.
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            arn = f"arn:aws:iam::{PLACEHOLDER_ACCOUNT_ID}:user/offline-plan"
            return {"accountId": PLACEHOLDER_ACCOUNT_ID, "arn": arn, "userId": "OFFLINEPLAN", "id": PLACEHOLDER_ACCOUNT_ID}, []
        if args.token == "aws:elb/getServiceAccount:getServiceAccount":
            # ELB's log-delivery account of the region (a fixed table in the provider; placeholder here).
            return {"id": PLACEHOLDER_ELB_ACCOUNT_ID, "arn": f"arn:aws:iam::{PLACEHOLDER_ELB_ACCOUNT_ID}:root",
                    "region": args.args.get("region", "")}, []  # fmt: skip
        if args.token == "aws:ssm/getParameter:getParameter":
            name = args.args.get("name", "")
            return {"name": name, "value": PLACEHOLDER_SSM_VALUE, "insecureValue": PLACEHOLDER_SSM_VALUE,
                    "type": "String", "arn": f"arn:aws:ssm:::parameter{name}", "id": name, "version": 1,
                    "withDecryption": False}, []  # fmt: skip
        raise PlanError(
            f"the offline plan has no answer for the invoke {args.token!r}; declare inputs from "
            "config instead, or teach platformctl/offline.py what a preview would see"
        )


class _PlanMonitor(mocks.MockMonitor):
    """Records each registration exactly as the SDK sent it, with engine-style URNs."""

    def __init__(self) -> None:
        super().__init__(_PlanMocks())
        self.planned: list[PlannedResource] = []
        self.stack_urn: str | None = None
        self.stack_outputs: dict[str, Any] = {}

    def make_urn(self, parent: str, type_: str, name: str) -> str:
        qualified = type_
        if parent and parent != self.stack_urn:
            qualified = parent.split("::")[2] + "$" + type_
        return "urn:pulumi:" + "::".join([settings.get_stack(), settings.get_project(), qualified, name])

    def RegisterResource(self, request):  # noqa: N802 (gRPC method name)
        urn = self.make_urn(request.parent, request.type, request.name)
        if request.type == _STACK_TYPE:
            self.stack_urn = urn
            return super().RegisterResource(request)
        if any(r.urn == urn for r in self.planned):
            raise PlanError(f"duplicate resource URN {urn}: two resources share a type and name")
        self.planned.append(
            PlannedResource(
                urn=urn,
                type=request.type,
                name=request.name,
                parent=request.parent if request.parent and request.parent != self.stack_urn else None,
                # A provider reference is "<provider urn>::<provider id>".
                provider=request.provider.rsplit("::", 1)[0] if request.provider else None,
                custom=bool(request.custom),
                inputs=wire_to_plain(json_format.MessageToDict(request.object)),
                dependencies={
                    key: sorted(deps.urns) for key, deps in request.propertyDependencies.items() if deps.urns
                },
                # Everything the engine waits for: input dependencies and explicit depends_on.
                depends_on=sorted(set(request.dependencies)),
            )
        )
        return super().RegisterResource(request)

    def RegisterResourceOutputs(self, request):  # noqa: N802
        outputs = wire_to_plain(json_format.MessageToDict(request.outputs))
        for resource in self.planned:
            if resource.urn == request.urn:
                resource.outputs = outputs
        if request.urn == self.stack_urn:
            self.stack_outputs = outputs
        return super().RegisterResourceOutputs(request)


@contextmanager
def _program_environment(project: Project) -> Iterator[None]:
    """cwd and import path as the Python language host sets them for a program."""
    old_cwd, old_path = os.getcwd(), list(sys.path)
    os.chdir(project.root)
    sys.path.insert(0, str(project.main.parent))
    try:
        yield
    finally:
        os.chdir(old_cwd)
        sys.path[:] = old_path


def _describe_failure(exc: BaseException, project: Project) -> str:
    """The error and the innermost line of the project's own code that raised it."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith(str(project.root))
              and "/.venv/" not in f.filename]  # fmt: skip
    where = ""
    if frames:
        frame = frames[-1]
        where = f" (at {project.relative(Path(frame.filename))}:{frame.lineno})"
    return f"{type(exc).__name__}: {exc}{where}"


def run_offline_plan(project: Project, stack: str) -> Plan:
    """Plan ``stack``: raises ProjectError (unknown stack), ConfigError or PlanError."""
    config, secret_keys = read_stack_config(project, stack)
    monitor = _PlanMonitor()
    # The loop must exist before set_mocks: it registers a root stack, and that RPC
    # task belongs to whatever loop is current.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    # The SDK calls the monitor from the loop's executor threads, and the mock monitor
    # gives each such thread an event loop of its own. Make those loops here, so they
    # can be closed deterministically (left to the garbage collector, Python prints
    # "Exception ignored ... Invalid file descriptor" at exit).
    worker_loops: list[asyncio.AbstractEventLoop] = []

    def _worker_loop() -> None:
        worker_loops.append(asyncio.new_event_loop())
        asyncio.set_event_loop(worker_loops[-1])

    loop.set_default_executor(ThreadPoolExecutor(max_workers=4, initializer=_worker_loop))
    try:
        mocks.set_mocks(monitor.mocks, project=project.name, stack=stack, preview=True, monitor=monitor)
        # set_mocks's root stack stands in for nothing; the program's run gets a fresh
        # one, as under the real language host, so stack exports are recorded.
        settings.set_root_resource(None)  # type: ignore[arg-type]
        runtime_config.set_all_config(config, sorted(secret_keys))
        with _program_environment(project):
            loop.run_until_complete(
                runtime_stack.run_in_stack(lambda: runpy.run_path(str(project.main), run_name="__main__"))
            )
    except (ConfigError, PlanError):
        raise
    except Exception as exc:  # noqa: BLE001 - any program failure becomes a located PlanError
        raise PlanError(_describe_failure(exc, project)) from exc
    finally:
        # After a failure the SDK leaves registrations pending: cancel them quietly.
        pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_default_executor())
        for worker_loop in worker_loops:
            worker_loop.close()
        asyncio.set_event_loop(None)
        loop.close()
        runtime_config.set_all_config({}, [])
    return Plan(
        project=project.name,
        stack=stack,
        stack_file=project.relative(project.stack_file(stack)),
        # Registration order depends on asyncio scheduling; URN order is stable.
        resources=sorted(monitor.planned, key=lambda r: r.urn),
        stack_outputs=monitor.stack_outputs,
    )
