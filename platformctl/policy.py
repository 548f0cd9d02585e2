"""Running a policy pack against the offline plan through the Analyzer gRPC interface.

As the Pulumi CLI does: start the pack's program, read the port it prints, ask for its
info (policies and initial config), configure it, then send ``Analyze`` for every resource
(type, name, URN, inputs as the engine sends them: camelCase, unknowns as the engine's
sentinel) and one ``AnalyzeStack`` with all of them, dependencies included.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from platformctl.offline import SECRET, UNKNOWN, Plan

ENGINE_UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # what the engine sends for computed values


class PolicyPackError(Exception):
    """The pack could not be started or answered badly."""


@dataclass(frozen=True)
class Violation:
    policy: str
    enforcement: str  # mandatory | advisory
    severity: str
    urn: str
    message: str
    remediation: str


def _engine_value(value: Any) -> Any:
    if value == UNKNOWN:
        return ENGINE_UNKNOWN
    if value == SECRET:
        return "[secret]"
    if isinstance(value, dict):
        return {k: _engine_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_engine_value(v) for v in value]
    return value


class PolicyPackProcess:
    """The pack's program as a child process, and a stub to its Analyzer service."""

    def __init__(self, pack_dir: Path) -> None:
        main = pack_dir / "__main__.py"
        if not main.is_file():
            raise PolicyPackError(f"{pack_dir}: no __main__.py (a Python policy pack)")
        self.process = subprocess.Popen([sys.executable, str(main)], cwd=pack_dir, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)  # fmt: skip
        line = self.process.stdout.readline() if self.process.stdout else ""
        if not line.strip().isdigit():
            self.process.kill()
            raise PolicyPackError(f"{pack_dir}: the pack did not print its port ({self.process.stderr.read()[-2000:]})")
        import grpc
        from pulumi.runtime.proto import analyzer_pb2_grpc

        self.channel = grpc.insecure_channel(f"127.0.0.1:{int(line)}")
        self.stub = analyzer_pb2_grpc.AnalyzerStub(self.channel)

    def __enter__(self) -> PolicyPackProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.channel.close()
        self.process.kill()
        self.process.wait()

    def configure(self) -> dict[str, dict[str, Any]]:
        """Apply the pack's initial config (as the CLI does without --policy-pack-config); returns policy info."""
        from google.protobuf import empty_pb2, struct_pb2
        from pulumi.runtime.proto import analyzer_pb2

        info = self.stub.GetAnalyzerInfo(empty_pb2.Empty())
        levels = {p.name: p.enforcementLevel for p in info.policies}
        policies = {p.name: {"enforcement": analyzer_pb2.EnforcementLevel.Name(p.enforcementLevel).lower(),
                             "severity": analyzer_pb2.PolicySeverity.Name(p.severity).removeprefix("POLICY_SEVERITY_").lower(),
                             "remediation": p.remediation_steps if hasattr(p, "remediation_steps") else ""}
                    for p in info.policies}  # fmt: skip
        config = {}
        for name in policies:
            properties = struct_pb2.Struct()
            if name in info.initialConfig:
                properties = info.initialConfig[name].properties
            # Initial config carries properties only; an unset level reads as 0, which is ADVISORY in
            # the protocol, so each policy keeps its own declared level (as the CLI resolves it).
            config[name] = analyzer_pb2.PolicyConfig(enforcementLevel=levels[name], properties=properties)
        self.stub.Configure(analyzer_pb2.ConfigureAnalyzerRequest(policyConfig=config))
        return policies

    def analyze(self, resources: list[dict[str, Any]]) -> list[Any]:
        """Diagnostics for each resource (``Analyze``) and for the stack (``AnalyzeStack``)."""
        from google.protobuf import struct_pb2
        from pulumi.runtime.proto import analyzer_pb2

        def struct(value: dict[str, Any]) -> struct_pb2.Struct:
            message = struct_pb2.Struct()
            message.update(_engine_value(value))
            return message

        diagnostics = []
        stack = []
        for resource in resources:
            properties = struct(resource["inputs"])
            request = analyzer_pb2.AnalyzeRequest(type=resource["type"], properties=properties, urn=resource["urn"],
                                                  name=resource["name"])  # fmt: skip
            for diagnostic in self.stub.Analyze(request).diagnostics:
                if not diagnostic.urn:  # the CLI attributes a resource's diagnostics to the resource asked about
                    diagnostic.urn = resource["urn"]
                diagnostics.append(diagnostic)
            dependencies = {key: analyzer_pb2.AnalyzerPropertyDependencies(urns=urns)
                            for key, urns in (resource.get("dependencies") or {}).items()}  # fmt: skip
            stack.append(analyzer_pb2.AnalyzerResource(
                type=resource["type"], properties=properties, urn=resource["urn"], name=resource["name"],
                parent=resource.get("parent") or "", dependencies=resource.get("dependsOn") or [],
                propertyDependencies=dependencies))  # fmt: skip
        diagnostics.extend(self.stub.AnalyzeStack(analyzer_pb2.AnalyzeStackRequest(resources=stack)).diagnostics)
        return diagnostics


def check_resources(pack_dir: Path, resources: list[dict[str, Any]]) -> list[Violation]:
    from pulumi.runtime.proto import analyzer_pb2

    with PolicyPackProcess(pack_dir) as pack:
        policies = pack.configure()
        diagnostics = pack.analyze(resources)
    violations = []
    for diagnostic in diagnostics:
        info = policies.get(diagnostic.policyName, {})
        violations.append(Violation(
            policy=diagnostic.policyName,
            enforcement=analyzer_pb2.EnforcementLevel.Name(diagnostic.enforcementLevel).lower(),
            severity=info.get("severity", ""), urn=diagnostic.urn, message=diagnostic.message,
            remediation=info.get("remediation", ""),
        ))  # fmt: skip
    return violations


def check_plan(pack_dir: Path, plan: Plan) -> list[Violation]:
    """The pack's verdict on every custom resource of the plan (providers excluded, as the CLI does)."""
    resources = [r.to_json() for r in plan.resources if r.custom and not r.is_provider]
    return check_resources(pack_dir, resources)
