"""Canary analysis (#15, part 1): the config's rules, the analysis queries under promtool, and
the rollout objects against Argo Rollouts' API schemas.

promtool runs each analysis query as a recording rule and, for the unit tests, as an alert
that fires exactly when the AnalysisTemplate's failureCondition holds (same threshold, same
comparison): a bad canary trips it, a good canary doesn't, and a bad *stable* version next to
a good canary doesn't either (the queries read the canary's pods only).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from pydantic import ValidationError

from components.config import CanaryAnalysisConfig, CanaryConfig
from components.inference import rollouts

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE, DEPLOYMENT, CANARY, STABLE = "inference", "qwen-7b", "7c9f5d6b8", "5f4b7c9d1"
ANALYSIS = CanaryAnalysisConfig(max_error_ratio=0.01, max_p99_latency_seconds=2.0, interval_seconds=60)
CANARY_CONFIG = CanaryConfig.model_validate({"steps": [{"weight": 10, "pauseSeconds": 300}, {"weight": 50, "pauseSeconds": 600},
                                                       {"weight": 100}],
                                             "analysis": {"maxErrorRatio": 0.01, "maxP99LatencySeconds": 2.0}})  # fmt: skip


@pytest.mark.parametrize("canary, location, message", [
    ({"steps": [{"weight": 10}, {"weight": 50}], "analysis": {"maxErrorRatio": 0.01, "maxP99LatencySeconds": 2}},
     ("steps", 1, "weight"), "the last step must reach 100"),
    ({"steps": [{"weight": 50}, {"weight": 10}, {"weight": 100}], "analysis": {"maxErrorRatio": 0.01, "maxP99LatencySeconds": 2}},
     ("steps", 1, "weight"), "must exceed the step before (50)"),
    ({"steps": [{"weight": 10}, {"weight": 100}]}, ("analysis",), "Field required"),
    ({"steps": [], "analysis": {"maxErrorRatio": 0.01, "maxP99LatencySeconds": 2}}, ("steps",), "at least 1 item"),
])  # fmt: skip
def test_a_canary_without_analysis_or_that_stops_short_is_refused_naming_the_field(canary, location, message):
    with pytest.raises(ValidationError) as caught:
        CanaryConfig.model_validate(canary)
    [error] = caught.value.errors()
    cause = error.get("ctx", {}).get("error")
    # Cross-field rules carry each problem's own key path (the platform's errors print it).
    paths = [path for path, _, text in cause.problems if message in text] if cause is not None else [error["loc"]]
    assert message in error["msg"] and paths == [location], (error, paths)


def test_steps_alternate_weights_and_pauses_and_end_at_full_weight():
    assert rollouts.canary_steps(CANARY_CONFIG) == [
        {"setWeight": 10}, {"pause": {"duration": "300s"}}, {"setWeight": 50}, {"pause": {"duration": "600s"}},
        {"setWeight": 100}]  # fmt: skip
    held = CanaryConfig.model_validate({"steps": [{"weight": 25}, {"weight": 100}],
                                        "analysis": {"maxErrorRatio": 0.05, "maxP99LatencySeconds": 5}})  # fmt: skip
    assert rollouts.canary_steps(held) == [{"setWeight": 25}, {"pause": {}}, {"setWeight": 100}]  # waits for a promote


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: `make` installs Debian's prometheus package as root (Makefile DEB_PACKAGES)")
    return path


def _rule_file(path: Path) -> None:
    metrics = rollouts.analysis_metrics(DEPLOYMENT, NAMESPACE, ANALYSIS, canary_hash=CANARY)
    operator = {True: ">", False: "<"}
    path.write_text(yaml.safe_dump({"groups": [
        {"name": "canary-analysis", "rules": [{"record": f"canary:{m.name.replace('-', '_')}", "expr": m.query} for m in metrics]},
        {"name": "canary-failing", "rules": [
            {"alert": f"Canary{m.name.title().replace('-', '')}Failing",
             "expr": f"({m.query}) {operator[m.failing_above]} {m.threshold:g}"} for m in metrics]},
    ]}))  # fmt: skip


def _requests(hash_: str, total_per_min: int, errors_per_min: int, slow: bool) -> list[dict]:
    """Counter series of one ReplicaSet's pods: 200s and 5xx, and the histogram's buckets."""
    labels = f'namespace="{NAMESPACE}", {rollouts.HASH_SERIES_LABEL}="{hash_}"'
    ok = total_per_min - errors_per_min
    series = [
        {"series": f'inference_request_duration_seconds_count{{{labels}, status="200"}}', "values": f"0+{ok}x20"},
        {"series": f'inference_request_duration_seconds_count{{{labels}, status="503"}}', "values": f"0+{errors_per_min}x20"},
    ]
    # Fast: everything under 0.5 s. Slow: 10 % of requests between 2.5 s and 5 s, over the 2 s bound.
    fast_share = 0.9 if slow else 1.0
    for bound, share in (("0.5", fast_share), ("2.5", fast_share), ("5", 1.0), ("+Inf", 1.0)):
        series.append({"series": f'inference_request_duration_seconds_bucket{{{labels}, le="{bound}"}}',
                       "values": f"0+{int(total_per_min * share)}x20"})  # fmt: skip
    return series


def _ready(hash_: str, ready: list[bool]) -> list[dict]:
    return [{"series": f'kube_pod_status_ready{{namespace="{NAMESPACE}", pod="{DEPLOYMENT}-{hash_}-p{i}", condition="true"}}',
             "values": f"{int(is_ready)}x20"} for i, is_ready in enumerate(ready)]  # fmt: skip


def _firing(tmp_path: Path, name: str, series: list[dict]) -> set[str]:
    """The alerts firing at 10 minutes for these series (promtool test rules, expected none: the
    failures list what fired)."""
    rules = tmp_path / "rules.yaml"
    _rule_file(rules)
    names = ("CanaryErrorRatioFailing", "CanaryP99LatencyFailing", "CanaryReadyRatioFailing")
    test = tmp_path / f"{name}.yaml"
    test.write_text(yaml.safe_dump({"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": series,
        "alert_rule_test": [{"eval_time": "10m", "alertname": alert, "exp_alerts": []} for alert in names]}]}))
    result = subprocess.run([_promtool(), "test", "rules", str(test)], capture_output=True, text=True)
    if result.returncode == 0:
        return set()
    fired = {alert for alert in names if f"alertname: {alert}" in result.stdout + result.stderr}
    assert fired, f"promtool failed for another reason: {result.stdout}{result.stderr}"  # never a silent pass
    return fired


def test_the_analysis_queries_pass_promtool_as_recording_rules(tmp_path):
    _rule_file(tmp_path / "rules.yaml")
    result = subprocess.run([_promtool(), "check", "rules", str(tmp_path / "rules.yaml")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("case, series, expected", [
    ("good-canary", _requests(CANARY, 100, 0, slow=False) + _ready(CANARY, [True, True]), set()),
    ("errors", _requests(CANARY, 100, 5, slow=False) + _ready(CANARY, [True, True]), {"CanaryErrorRatioFailing"}),
    ("slow", _requests(CANARY, 100, 0, slow=True) + _ready(CANARY, [True, True]), {"CanaryP99LatencyFailing"}),
    ("not-ready", _requests(CANARY, 100, 0, slow=False) + _ready(CANARY, [True, False]), {"CanaryReadyRatioFailing"}),
    # The stable version failing on every count must not fail a healthy canary.
    ("bad-stable", _requests(CANARY, 100, 0, slow=False) + _ready(CANARY, [True]) + _requests(STABLE, 100, 50, slow=True)
     + _ready(STABLE, [False, False]), set()),
])  # fmt: skip
def test_a_bad_canary_trips_the_analysis_and_a_good_one_does_not(tmp_path, case, series, expected):
    assert _firing(tmp_path, case, series) == expected


def test_the_template_fails_exactly_where_the_promtool_alerts_fire():
    template = rollouts.analysis_template(DEPLOYMENT, NAMESPACE, ANALYSIS, "http://prometheus:9090", {"app": "x"})
    by_name = {m["name"]: m for m in template["spec"]["metrics"]}
    assert by_name["error-ratio"]["failureCondition"] == "result[0] > 0.01"
    assert by_name["error-ratio"]["successCondition"] == "result[0] <= 0.01"
    assert by_name["p99-latency"]["failureCondition"] == "result[0] > 2"
    assert by_name["ready-ratio"]["failureCondition"] == "result[0] < 1"
    for metric in template["spec"]["metrics"]:
        assert "{{args.canary-hash}}" in metric["provider"]["prometheus"]["query"]
        assert metric["interval"] == "60s" and metric["failureLimit"] == ANALYSIS.failure_limit
    assert template["spec"]["args"] == [{"name": rollouts.CANARY_HASH_ARG}]


SCHEMAS = Path(__file__).parent / "argo-rollouts-schemas"  # package.json + lockfile (registry integrity) + validate.mjs
CACHE = ROOT / ".cache" / "npm" / "argo-rollouts-schemas"


def validate_rollout_objects(objects: list[dict], tmp_path: Path) -> list[str]:
    """Argo Rollouts' own API schemas: ``@kubernetes-models/argo-rollouts``, generated from
    Argo Rollouts' v1alpha1 Go types, installed exactly as the lockfile pins it (``npm ci``
    checks every package's integrity) and run by node."""
    lock = (SCHEMAS / "package-lock.json").read_bytes()
    stamp = CACHE / ".installed-lock"
    if not stamp.is_file() or stamp.read_bytes() != lock:
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("npm is missing: `make` installs nodejs (Makefile)")
        shutil.rmtree(CACHE, ignore_errors=True)
        CACHE.mkdir(parents=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy(SCHEMAS / name, CACHE / name)
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=CACHE, check=True, capture_output=True)
        stamp.write_bytes(lock)
    shutil.copy(SCHEMAS / "validate.mjs", CACHE / "validate.mjs")  # resolves the packages from CACHE
    path = tmp_path / "objects.json"
    path.write_text(json.dumps(objects))
    result = subprocess.run(["node", str(CACHE / "validate.mjs"), str(path)], capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def _deployment() -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": DEPLOYMENT, "namespace": NAMESPACE},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": DEPLOYMENT}}, "progressDeadlineSeconds": 900,
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                     "template": {"metadata": {"labels": {"app": DEPLOYMENT}},
                                  "spec": {"containers": [{"name": "server", "image": "registry/inference@sha256:" + "0" * 64}]}}}}  # fmt: skip


@pytest.fixture(scope="module")
def every_plan(plans, project):
    """The stacks' plans and the hybrid example's (the private cloud's NGINX split)."""
    import dataclasses

    from platformctl.offline import run_offline_plan

    hybrid = run_offline_plan(dataclasses.replace(project, stack_config_dir=ROOT / "examples" / "stacks"), "hybrid")
    return {**plans, "hybrid": hybrid}


def _argo_objects(plan) -> list[dict]:
    return [{"apiVersion": r.inputs["apiVersion"], "kind": r.inputs["kind"], "metadata": r.inputs["metadata"],
             "spec": r.inputs["spec"]} for r in plan.resources if r.type.startswith("kubernetes:argoproj.io/")]  # fmt: skip


def test_every_stacks_rollout_objects_are_valid_argo_rollouts_objects(every_plan, tmp_path):
    objects = [o for plan in every_plan.values() for o in _argo_objects(plan)]
    kinds = sorted(o["kind"] for o in objects)
    assert kinds.count("Rollout") == kinds.count("AnalysisTemplate") >= len(every_plan)  # a canary in every stack
    assert validate_rollout_objects(objects, tmp_path) == []


def test_the_schema_check_rejects_a_broken_rollout(tmp_path):
    strategy = rollouts.canary_strategy(DEPLOYMENT, CANARY_CONFIG, traffic_routing=None)
    broken = rollouts.rollout_from_deployment(_deployment(), strategy)
    assert validate_rollout_objects([broken], tmp_path) == []
    broken["spec"]["strategy"]["canary"]["steps"][0]["setWeight"] = "ten"
    [problem] = validate_rollout_objects([broken], tmp_path)
    assert "setWeight must be integer" in problem


# --------------------------------------------------------------------------- the program's rollouts, every stack


def _canaries(config):
    return [(d, "eks" if d.target == "eks" else "privatecloud") for d in config.inference.deployments if d.canary]


def _stack_config(stack: str):
    from platformctl.common import load_stack_config

    return load_stack_config(stack, ROOT, ROOT / "examples" / "stacks" if stack == "hybrid" else None)


def test_each_canary_is_a_rollout_of_the_same_pods_with_its_steps_analysis_and_split(every_plan):
    from components.inference import manifests

    for stack, plan in every_plan.items():
        config = _stack_config(stack)
        assert _canaries(config), f"{stack}: no deployment has a canary"
        for deployment, cluster in _canaries(config):
            prefix = f"serving-{cluster}-{deployment.name}"
            rollout = plan.named(f"{prefix}-rollout")
            assert not [r for r in plan.resources if r.name == f"{prefix}-deployment"]  # the Rollout runs the pods
            spec = rollout.inputs["spec"]
            canary = spec["strategy"]["canary"]
            assert canary["steps"] == rollouts.canary_steps(deployment.canary)
            assert canary["analysis"]["templates"] == [{"templateName": rollouts.template_name(deployment.name)}]
            assert canary["analysis"]["args"][0]["valueFrom"] == {"podTemplateHashValue": "Latest"}
            assert spec["selector"]["matchLabels"] == manifests.selector(deployment.name)
            # A model load may use the startup probe's whole budget before Argo calls the canary stuck.
            assert spec["progressDeadlineSeconds"] > manifests.STARTUP_BUDGET_SECONDS and spec["progressDeadlineAbort"] is True
            assert spec["template"]["metadata"]["labels"]["app.kubernetes.io/instance"] == deployment.name
            controller = plan.named(f"serving-{cluster}-rollouts-controller")
            assert controller.urn in rollout.depends_on  # its CRDs first
            assert (controller.inputs["chart"], controller.inputs["version"]) == ("argo-rollouts", config.inference.rollouts.chart_version)
            template = plan.named(f"{prefix}-analysistemplate")
            metrics = {m["name"]: m for m in template.inputs["spec"]["metrics"]}
            assert set(metrics) == {"error-ratio", "p99-latency", "ready-ratio"}
            address = metrics["error-ratio"]["provider"]["prometheus"]["address"]
            assert address == rollouts.prometheus_url(config.inference, deployment.target)
            assert metrics["error-ratio"]["failureLimit"] == deployment.canary.analysis.failure_limit
            autoscaler = plan.named(f"{prefix}-horizontalpodautoscaler")
            assert autoscaler.inputs["spec"]["scaleTargetRef"] == {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
                                                                   "name": deployment.name}  # fmt: skip
            monitor = plan.named(f"{prefix}-servicemonitor").inputs["spec"]
            assert monitor["podTargetLabels"] == [manifests.ROLLOUT_HASH_LABEL]
            assert {"key": manifests.TRAFFIC_ROLE_LABEL, "operator": "DoesNotExist"} in monitor["selector"]["matchExpressions"]
            if not deployment.expose:
                assert "trafficRouting" not in canary  # replica counts behind the deployment's Service
                continue
            services = {role: plan.named(f"{prefix}-service-{role}").inputs for role in ("stable", "canary")}
            for role, service in services.items():
                assert service["metadata"]["name"] == canary[f"{role}Service"] == f"{deployment.name}-{role}"
                assert service["spec"]["selector"] == manifests.selector(deployment.name)  # Argo adds the hash
            entry = "eks" if deployment.target == "eks" else "private-cloud"
            ingress = plan.named(f"ingress-{entry}-{deployment.name}").inputs
            backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
            if deployment.target == "eks":
                assert canary["trafficRouting"] == {"alb": {"ingress": ingress["metadata"]["name"], "rootService": deployment.name,
                                                            "servicePort": manifests.SERVICE_PORT}}  # fmt: skip
                assert backend == {"name": deployment.name, "port": {"name": "use-annotation"}}
            else:
                assert canary["trafficRouting"] == {"nginx": {"stableIngress": ingress["metadata"]["name"]}}
                assert backend == {"name": f"{deployment.name}-stable", "port": {"number": manifests.SERVICE_PORT}}


def test_a_new_image_version_or_model_revision_changes_the_pod_template_and_so_starts_a_canary():
    from components.config import InferenceConfig, ModelDeploymentConfig
    from components.inference import manifests

    config = _stack_config("staging").inference
    target = manifests.TargetCluster(name="eks", kubernetes_version="1.33", has_gpu_scheduling_contract=True)
    deployment = config.deployments[0]

    def template(d: ModelDeploymentConfig, version: str = "0.3.0", conf: InferenceConfig = config) -> dict:
        return manifests.deployment_manifest(d, conf, target, "repo@sha256:" + "1" * 64, version, True)["spec"]["template"]

    base = template(deployment)
    assert template(deployment) == base
    assert template(deployment, version="0.3.1") != base  # a new image version
    moved = deployment.model_copy(update={"revision": "b" * 40})
    assert template(moved) != base  # a new model revision
    env = {e["name"]: e["value"] for e in template(moved)["spec"]["containers"][0]["env"]}
    assert env["MODEL_REVISION"] == "b" * 40  # in the pod template itself, not a shared ConfigMap


def test_a_canary_without_what_its_analysis_reads_is_refused_naming_the_key():
    from components.config import ConfigError, parse_config
    from platformctl.project import load_project, read_stack_config

    raw, secrets = read_stack_config(load_project(ROOT), "staging")
    raw["platform:inference"] = json.dumps({**json.loads(raw["platform:inference"]), "serviceMonitor": False})
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, secrets, "stacks/Pulumi.staging.yaml")
    assert "platform:inference.serviceMonitor = false: must be true: deployments[0]'s canary analysis reads what it scrapes" in str(
        caught.value)


def test_a_private_cloud_canary_needs_a_prometheus_to_analyse_it():
    import dataclasses

    from components.config import ConfigError, parse_config
    from platformctl.project import load_project, read_stack_config

    project = dataclasses.replace(load_project(ROOT), stack_config_dir=ROOT / "examples" / "stacks")
    raw, secrets = read_stack_config(project, "hybrid")
    inference = json.loads(raw["platform:inference"])
    del inference["rollouts"]
    raw["platform:inference"] = json.dumps(inference)
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, secrets, "examples/stacks/Pulumi.hybrid.yaml")
    assert "platform:inference.rollouts.privateCloudPrometheusUrl" in str(caught.value)
    assert "deployments[1] analyses its canary on the private cloud" in str(caught.value)
