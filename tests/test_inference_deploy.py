"""The inference image (ECR + docker-build) and the model deployments, in every stack's plan."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import typer.main
from hypothesis import given
from hypothesis import strategies as st

from components.config import ConfigError, ModelDeploymentConfig, PlatformConfig, parse_config
from components.gpu import scheduling
from components.inference import image as image_identity
from components.inference import manifests
from components.inference import load_balancer_cidrs
from platformctl.offline import UNKNOWN, run_offline_plan

from .conftest import ROOT, STACKS

VERSION = (ROOT / "inference_image" / "VERSION").read_text().strip()
EXAMPLES = ROOT / "examples" / "stacks"
K8S_TYPES = ("kubernetes:apps/v1:Deployment", "kubernetes:core/v1:ConfigMap", "kubernetes:core/v1:Service",
             "kubernetes:autoscaling/v2:HorizontalPodAutoscaler", "kubernetes:policy/v1:PodDisruptionBudget",
             "kubernetes:networking.k8s.io/v1:NetworkPolicy", "kubernetes:core/v1:Namespace",
             "kubernetes:core/v1:ServiceAccount", "kubernetes:core/v1:Secret")  # fmt: skip


@pytest.fixture(scope="module")
def all_plans(plans, project):
    """Every stack plus the examples (the private-cloud target), by name."""
    examples = dataclasses.replace(project, stack_config_dir=EXAMPLES)
    hybrid = run_offline_plan(examples, "hybrid")
    return {**plans, "hybrid": hybrid}


ALL = [*STACKS, "hybrid"]


def _deployments(plan):
    """What runs each model's pods: a Deployment, or an Argo Rollout (a canary) with the same pod template."""
    return [r for r in plan.resources if r.name.startswith("serving-")
            and r.type in ("kubernetes:apps/v1:Deployment", "kubernetes:argoproj.io/v1alpha1:Rollout")]  # fmt: skip


def _env(resource) -> dict[str, str]:
    """The server's settings: its container's own env (in the pod template, so they roll out)."""
    [container] = resource.inputs["spec"]["template"]["spec"]["containers"]
    return {item["name"]: item["value"] for item in container["env"]}


# --------------------------------------------------------------------------- registry and build


@pytest.mark.parametrize("stack", STACKS)
def test_repositories_are_immutable_scanned_kms_encrypted_and_keep_n_versions(all_plans, stack):
    plan = all_plans[stack]
    repos = {r.name: r.inputs for r in plan.of_type("aws:ecr/repository:Repository") if r.name.startswith("inference-image")}
    cache = repos.pop("inference-image-cache")
    assert cache["imageTagMutability"] == "MUTABLE"  # buildx moves its cache tags; release repos never
    assert repos, "a stack with deployments builds at least one variant"
    for repo in repos.values():
        assert repo["imageTagMutability"] == "IMMUTABLE"
        assert repo["imageScanningConfiguration"] == {"scanOnPush": True}
        assert repo["encryptionConfigurations"][0]["encryptionType"] == "KMS"
    [key] = [k for k in plan.of_type("aws:kms/key:Key") if k.name == "inference-image-ecr"]
    assert key.inputs["enableKeyRotation"] is True
    config = _config(stack)
    for policy in [p for p in plan.of_type("aws:ecr/lifecyclePolicy:LifecyclePolicy") if p.name.startswith("inference-image")]:
        rules = json.loads(policy.inputs["policy"])["rules"]
        if policy.name != "inference-image-cache-lifecycle":
            keep = [r for r in rules if r["selection"]["countType"] == "imageCountMoreThan"]
            assert keep[0]["selection"]["countNumber"] == config.image.keep_versions


def _config(stack: str) -> PlatformConfig:
    from platformctl.project import load_project, read_stack_config

    project = load_project(ROOT)
    if stack == "hybrid":
        project = dataclasses.replace(project, stack_config_dir=EXAMPLES)
    raw, secret_keys = read_stack_config(project, stack)
    return parse_config(raw, secret_keys, f"stacks/Pulumi.{stack}.yaml")


def test_prod_keeps_the_configured_number_of_versions(all_plans):
    policies = {p.name: json.loads(p.inputs["policy"]) for p in all_plans["prod"].of_type("aws:ecr/lifecyclePolicy:LifecyclePolicy")}
    assert policies["inference-image-cuda-lifecycle"]["rules"][1]["selection"]["countNumber"] == 50


@pytest.mark.parametrize("stack", ALL)
def test_each_deployed_variant_is_built_once_for_amd64_pushed_with_version_tags_and_registry_cache(all_plans, stack):
    plan = all_plans[stack]
    config = _config(stack)
    images = {r.name: r.inputs for r in plan.of_type("docker-build:index:Image") if r.name.startswith("inference-image")}
    assert set(images) == {f"inference-image-{v}" for v in config.inference.variants}
    source = image_identity.source_revision(ROOT)
    for name, build in images.items():
        variant = name.rsplit("-", 1)[1]
        assert build["context"] == {"location": "./inference_image"}
        assert build["dockerfile"] == {"location": "./inference_image/Dockerfile"}
        assert build["platforms"] == ["linux/amd64"]
        assert build["push"] is True
        assert build["buildArgs"] == {"VARIANT": variant, "VERSION": VERSION, "REVISION": source.short_id,
                                      "SOURCE": config.image.source_url}  # fmt: skip
        # Tags need the repository URL: known only once the repository exists.
        assert build["tags"] == UNKNOWN
        assert build["cacheTo"][0]["registry"]["imageManifest"] is True  # what ECR accepts as a cache
        assert build["cacheTo"][0]["registry"]["mode"] == "max"


def test_tags_are_version_and_version_source_id():
    clean = image_identity.SourceRevision("abc1234", dirty=False)
    dirty = image_identity.SourceRevision("abc1234", dirty=True)
    repo = "111122223333.dkr.ecr.us-east-1.amazonaws.com/platform-prod-inference-server-cuda"
    assert image_identity.image_tags(repo, "1.2.3", clean) == [f"{repo}:1.2.3", f"{repo}:1.2.3-abc1234"]
    assert image_identity.image_tags(repo, "1.2.3", dirty)[1] == f"{repo}:1.2.3-abc1234-dirty"


def test_the_deployment_runs_the_image_by_digest_never_by_tag(all_plans):
    repo = "111122223333.dkr.ecr.us-east-1.amazonaws.com/x"
    digest = "sha256:" + "a" * 64
    assert image_identity.pinned_ref(repo, digest) == f"{repo}@{digest}"
    for not_a_digest in ("", "latest", "sha256:abc", f"{repo}:1.0.0"):
        with pytest.raises(ValueError, match="is not sha256"):
            image_identity.pinned_ref(repo, not_a_digest)
    # In the plan the image is computed from the build's digest output: unknown until the
    # push, and the Deployment depends on exactly that build.
    for stack in ALL:
        plan = all_plans[stack]
        builds = {r.urn: r for r in plan.of_type("docker-build:index:Image") if r.name.startswith("inference-image")}
        for deployment in _deployments(plan):
            assert deployment.inputs["spec"]["template"]["spec"]["containers"][0]["image"] == UNKNOWN
            assert set(deployment.dependencies["spec"]) & set(builds), f"{stack}: {deployment.name} not tied to a build"


def test_version_is_one_value_in_tags_labels_and_what_the_server_reports():
    from inference_server import __version__
    from inference_server.api import ServerSettings, create_app

    dockerfile = (ROOT / "inference_image" / "Dockerfile").read_text()
    assert 'org.opencontainers.image.version="${VERSION}"' in dockerfile
    assert re.search(r"^ARG VERSION$", dockerfile, re.M), "no default version in the Dockerfile"
    assert __version__ == VERSION == image_identity.read_version(ROOT)
    app = create_app(ServerSettings(), load=lambda: None)
    assert app.openapi()["info"]["version"] == VERSION
    tags = image_identity.image_tags("r", image_identity.read_version(ROOT), image_identity.SourceRevision("1", False))
    assert {t.split(":", 1)[1].split("-")[0] for t in tags} == {VERSION}


def test_source_revision_is_the_image_directory_tree_and_notices_uncommitted_changes(tmp_path, monkeypatch):
    monkeypatch.delenv(image_identity.REVISION_OVERRIDE_ENV, raising=False)
    (tmp_path / "inference_image").mkdir()
    (tmp_path / "inference_image" / "VERSION").write_text("1.0.0\n")
    (tmp_path / "README").write_text("x")
    git = ["git", "-C", str(tmp_path), "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    first = image_identity.source_revision(tmp_path)
    assert first == image_identity.SourceRevision(
        subprocess.run([*git, "rev-parse", "--short=7", "HEAD:inference_image"], capture_output=True, text=True,
                       check=True).stdout.strip(), dirty=False)  # fmt: skip
    (tmp_path / "README").write_text("infra-only change")
    subprocess.run([*git, "commit", "-qam", "two"], check=True)
    assert image_identity.source_revision(tmp_path) == first  # no rebuild for infra-only commits
    (tmp_path / "inference_image" / "VERSION").write_text("1.0.1\n")
    assert image_identity.source_revision(tmp_path).dirty is True
    monkeypatch.setenv(image_identity.REVISION_OVERRIDE_ENV, "deadbeefcafe")
    assert image_identity.source_revision(tmp_path) == image_identity.SourceRevision("deadbee", False)


def test_an_unreadable_or_bad_version_and_a_missing_checkout_are_clear_errors(tmp_path, monkeypatch):
    with pytest.raises(image_identity.ImageSourceError, match="inference_image/VERSION: cannot read"):
        image_identity.read_version(tmp_path)
    (tmp_path / "inference_image").mkdir()
    (tmp_path / "inference_image" / "VERSION").write_text("one\n")
    with pytest.raises(image_identity.ImageSourceError, match="'one' is not a semantic version"):
        image_identity.read_version(tmp_path)
    monkeypatch.delenv(image_identity.REVISION_OVERRIDE_ENV, raising=False)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    with pytest.raises(image_identity.ImageSourceError, match="set PLATFORM_IMAGE_REVISION"):
        image_identity.source_revision(tmp_path)


# --------------------------------------------------------------------------- Kubernetes objects


def _k8s_objects(plan):
    return [r for r in plan.resources if r.type in K8S_TYPES and r.name.startswith("serving-")]


@pytest.mark.parametrize("stack", ALL)
def test_every_kubernetes_object_is_valid_for_its_clusters_version(all_plans, stack):
    plan = all_plans[stack]
    config = _config(stack)
    providers = {r.urn: r for r in plan.resources if r.type == "pulumi:providers:kubernetes"}
    versions = {"eks": config.eks.version,
                "privateCloud": config.private_cloud.kubernetes_version if config.private_cloud else None}  # fmt: skip
    objects = _k8s_objects(plan)
    assert objects
    for resource in objects:
        [provider_name] = [p.name for urn, p in providers.items() if resource.provider.startswith(urn)]
        target = "privateCloud" if provider_name == "private-cloud" else "eks"
        assert resource.name.startswith(f"serving-{target.lower()}-")
        manifest = resource.inputs
        if manifest["kind"] == "Secret":  # pulumi-kubernetes sends a Secret's data as one secret value
            assert manifest["stringData"] == "[secret]"
            manifest = {**manifest, "stringData": {"jwt-key": "redacted"}}
        kubernetes_validate.validate(manifest, f"{versions[target]}.0", strict=True)


def test_kubernetes_validate_catches_a_typo_in_a_deployment():
    deployment = ModelDeploymentConfig(name="x", demo=True, variant="cpu", gpus=0)
    config = _config("dev").inference
    manifest = manifests.deployment_manifest(deployment, config, manifests.TargetCluster("eks", "1.33", True),
                                             "r@sha256:" + "0" * 64, VERSION)  # fmt: skip
    kubernetes_validate.validate(manifest, "1.33.0", strict=True)
    manifest["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {"path": "/readyz"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(manifest, "1.33.0", strict=True)


def _server_paths() -> set[str]:
    from inference_server.api import ServerSettings, create_app

    return {route.path for route in create_app(ServerSettings(), load=lambda: None).routes}


def _server_envvars() -> set[str]:
    from inference_server.cli import app

    command = typer.main.get_command(app)
    return {p.envvar for p in command.params if isinstance(p.envvar, str)}


@pytest.mark.parametrize("stack", ALL)
def test_pods_probe_real_paths_drain_in_time_run_non_root_and_roll_without_losing_capacity(all_plans, stack):
    plan = all_plans[stack]
    config = _config(stack)
    paths = _server_paths()
    for resource in _deployments(plan):
        spec = resource.inputs["spec"]
        deployment = next(d for d in config.inference.deployments if d.name == resource.inputs["metadata"]["name"])
        pod = spec["template"]["spec"]
        [container] = pod["containers"]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"]["path"] in paths
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == container["startupProbe"]["httpGet"]["path"] == "/readyz"
        startup = container["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 600  # a model download fits
        env = _env(resource)
        assert set(env) <= _server_envvars() | {"HF_ENDPOINT", "HF_HUB_DISABLE_TELEMETRY"}, "unknown server setting"
        pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        assert pod["terminationGracePeriodSeconds"] > pre_stop + int(env["GRACE_PERIOD_S"])
        if resource.type == "kubernetes:apps/v1:Deployment":
            assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
        else:  # a canary adds the new version beside the full stable set: capacity never drops
            assert "canary" in spec["strategy"] and deployment.canary is not None
        security = container["securityContext"]
        assert security["runAsNonRoot"] is True and security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False and security["capabilities"] == {"drop": ["ALL"]}
        assert {"/models", "/tmp"} <= {m["mountPath"] for m in container["volumeMounts"]}
        assert container["resources"]["requests"] == container["resources"]["limits"]
        keys = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
        assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}


@pytest.mark.parametrize("stack", ALL)
def test_gpu_models_request_gpus_tolerate_the_taint_and_follow_the_scheduling_contract(all_plans, stack):
    plan = all_plans[stack]
    config = _config(stack)
    for resource in _deployments(plan):
        deployment = next(d for d in config.inference.deployments if d.name == resource.inputs["metadata"]["name"]
                          and resource.name.startswith(f"serving-{d.target.lower()}-"))  # fmt: skip
        pod = resource.inputs["spec"]["template"]["spec"]
        limits = pod["containers"][0]["resources"]["limits"]
        if deployment.variant == "cpu":
            assert scheduling.GPU_RESOURCE not in limits and "tolerations" not in pod
            continue
        assert limits[scheduling.GPU_RESOURCE] == str(deployment.gpus)
        assert scheduling.gpu_toleration() in pod["tolerations"]
        if deployment.target == "eks":
            preferred = pod["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
            weights = {p["preference"]["matchExpressions"][0]["values"][0]: p["weight"] for p in preferred}
            assert weights["reserved"] > weights["spot"]  # the reserved floor fills first
        else:
            assert pod["nodeSelector"] == config.private_cloud.gpu_node_selector


@pytest.mark.parametrize("stack", ALL)
def test_autoscaler_budget_and_network_policy_match_the_config(all_plans, stack):
    plan = all_plans[stack]
    config = _config(stack)
    by_kind: dict[str, dict[str, dict]] = {}
    for resource in _k8s_objects(plan):
        by_kind.setdefault(resource.inputs["kind"], {})[resource.name] = resource.inputs
    for deployment in config.inference.deployments:
        prefix = f"serving-{deployment.target.lower()}-{deployment.name}"
        hpa = by_kind["HorizontalPodAutoscaler"][f"{prefix}-horizontalpodautoscaler"]["spec"]
        assert (hpa["minReplicas"], hpa["maxReplicas"]) == (deployment.replicas.min, deployment.replicas.max)
        metric_types = [m["type"] for m in hpa["metrics"]]
        assert metric_types == (["Resource", "Pods"] if config.inference.metrics_adapter else ["Resource"])
        pdb = by_kind["PodDisruptionBudget"][f"{prefix}-poddisruptionbudget"]["spec"]
        assert pdb["minAvailable"] == deployment.replicas.min_available < deployment.replicas.min
        policy = by_kind["NetworkPolicy"][f"{prefix}-networkpolicy"]["spec"]
        peers = policy["ingress"][0]["from"]
        sources = {f["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for f in peers if "namespaceSelector" in f}
        assert sources == {config.inference.ingress_namespace, config.inference.prometheus_namespace}
        # The private cloud calls the EKS servers directly over the VPN only where vpn.access says so.
        direct = {f["ipBlock"]["cidr"] for f in peers if "ipBlock" in f}
        vpn_clients = (deployment.target == "eks" and config.vpn is not None and "inference" in config.vpn.access)
        # An exposed EKS deployment also admits its ALB's subnets (IP targets, health checks).
        alb = set(load_balancer_cidrs(config)) if deployment.expose and deployment.target == "eks" else set()
        assert direct == (set(map(str, config.vpn.on_prem_cidrs)) if vpn_clients else set()) | alb
        assert len(peers) == len(sources) + len(direct)
        assert policy["egress"][0]["ports"] == [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
        https = {b["ipBlock"]["cidr"] for rule in policy["egress"][1:] for b in rule["to"]}
        if deployment.target == "eks":
            assert https == {str(config.network.vpc_cidr), *map(str, config.inference.egress_cidrs)}
        else:
            assert https == set(map(str, config.private_cloud.egress_cidrs))
    denies = [o for name, o in by_kind["NetworkPolicy"].items() if name.endswith("-default-deny")]
    assert denies and all(d["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]} for d in denies)


@pytest.mark.parametrize("stack", ALL)
def test_secret_holds_key_material_from_a_pulumi_secret_and_irsa_reads_the_mirror(all_plans, stack):
    plan = all_plans[stack]
    config = _config(stack)
    for secret in [r for r in plan.of_type("kubernetes:core/v1:Secret") if r.name.startswith("serving-")]:
        assert secret.inputs["stringData"] == "[secret]"  # the whole value travels as a secret
    roles = [r for r in plan.of_type("aws:iam/role:Role") if r.name == "serving-eks-mirror-reader"]
    assert bool(roles) == (config.inference.mirror_bucket is not None)
    if roles:
        [account] = [r for r in plan.of_type("kubernetes:core/v1:ServiceAccount") if r.name == "serving-eks-service-account"]
        assert account.inputs["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == UNKNOWN
        [policy] = [r for r in plan.of_type("aws:iam/rolePolicy:RolePolicy") if r.name == "serving-eks-mirror-reader"]
        statements = json.loads(policy.inputs["policy"])["Statement"]
        assert {s["Action"] for s in statements} == {"s3:ListBucket", "s3:GetObject"}
        assert all(config.inference.mirror_bucket in s["Resource"] for s in statements)


@pytest.mark.parametrize("stack", ALL)
def test_service_monitor_scrapes_the_metrics_port(all_plans, stack):
    monitors = all_plans[stack].of_type("kubernetes:monitoring.coreos.com/v1:ServiceMonitor")
    assert monitors
    for monitor in monitors:
        [endpoint] = monitor.inputs["spec"]["endpoints"]
        assert endpoint["port"] == "http" and endpoint["path"] in _server_paths()


def test_private_cloud_objects_go_through_its_own_provider_with_a_secret_kubeconfig(all_plans):
    plan = all_plans["hybrid"]
    [provider] = [r for r in plan.resources if r.type == "pulumi:providers:kubernetes" and r.name == "private-cloud"]
    assert provider.inputs["kubeconfig"] == "[secret]"
    private = [r for r in _k8s_objects(plan) if r.name.startswith("serving-privatecloud-")]
    assert private and all(r.provider.startswith(provider.urn) for r in private)
    [deployment] = [r for r in _deployments(plan) if r.name.startswith("serving-privatecloud-")]
    assert deployment.inputs["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "ecr-pull"}]
    eks = [r for r in _k8s_objects(plan) if r.name.startswith("serving-eks-")]
    assert eks and not any(r.provider.startswith(provider.urn) for r in eks)


# --------------------------------------------------------------------------- bad config


def _raw(stack: str, **overrides: object) -> tuple[dict[str, str], set[str]]:
    from platformctl.project import load_project, read_stack_config

    raw, secret_keys = read_stack_config(load_project(ROOT), stack)
    for key, value in overrides.items():
        raw[f"platform:{key}"] = json.dumps(value) if not isinstance(value, str) else value
    return raw, secret_keys


def _problems(raw, secret_keys) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, secret_keys, "stacks/Pulumi.dev.yaml")
    return str(caught.value)


DEMO = {"name": "demo", "demo": True, "variant": "cpu", "gpus": 0}
AUTH = {"issuer": "https://auth.example.com", "publicKey": "-----BEGIN PUBLIC KEY-----"}


def test_a_deployment_on_a_cluster_that_is_not_configured_is_refused_naming_the_key():
    raw, keys = _raw("dev", inference={"auth": AUTH, "deployments": [{**DEMO, "target": "privateCloud"}]})
    assert ('platform:inference.deployments[0].target = "privateCloud": names a cluster that isn\'t configured'
            in _problems(raw, keys))


def test_replicas_below_or_at_the_disruption_budget_floor_are_refused():
    below = {**DEMO, "replicas": {"min": 1, "max": 3, "minAvailable": 2}}
    raw, keys = _raw("dev", inference={"auth": AUTH, "deployments": [below]})
    assert ("platform:inference.deployments[0].replicas.min = 1: is below the PodDisruptionBudget floor "
            "replicas.minAvailable (2)") in _problems(raw, keys)
    equal = {**DEMO, "replicas": {"min": 2, "max": 3, "minAvailable": 2}}
    raw, keys = _raw("dev", inference={"auth": AUTH, "deployments": [equal]})
    assert "platform:inference.deployments[0].replicas.minAvailable = 2: equals replicas.min (2)" in _problems(raw, keys)


def test_a_gpu_variant_where_there_is_no_gpu_capacity_is_refused():
    cuda = {"name": "m", "demo": True, "variant": "cuda", "gpus": 1}
    raw, keys = _raw("dev", inference={"auth": AUTH, "deployments": [cuda]},
                     gpu={"spot": {"instanceTypes": ["g6.xlarge", "g5.xlarge", "g4dn.xlarge"], "maxSize": 0}})  # fmt: skip
    assert ('platform:inference.deployments[0].variant = "cuda": needs GPUs but eks has no GPU capacity'
            in _problems(raw, keys))
    raw, keys = _raw("dev", inference={"auth": AUTH, "deployments": [{**cuda, "target": "privateCloud"}]},
                     privateCloud={"kubeconfig": "ciphertext", "gpu": False})  # fmt: skip
    keys = keys | {"platform:privateCloud"}
    problems = _problems(raw, keys)
    assert "needs GPUs but privateCloud has no GPU capacity: platform:privateCloud.gpu is false" in problems
    assert "ciphertext" not in problems  # a secret is never echoed


def test_other_deployment_mistakes_name_their_keys():
    cases = [
        ({**DEMO, "modelId": "Qwen/Qwen2.5-7B-Instruct"}, "deployments[0].modelId"),
        ({"name": "m", "modelId": "a/b", "variant": "cpu", "gpus": 0}, "deployments[0].revision = null: is required"),
        ({**DEMO, "gpus": 1}, "deployments[0].gpus = 1: must be 0 for the cpu variant"),
        ({**DEMO, "name": "Bad_Name"}, "deployments[0].name = \"Bad_Name\": String should match pattern"),
    ]
    for deployment, expected in cases:
        raw, keys = _raw("dev", inference={"auth": AUTH, "deployments": [deployment]})
        assert expected in _problems(raw, keys), expected
    raw, keys = _raw("dev", inference={"deployments": [DEMO]})
    assert "platform:inference.auth = null: is required when models are deployed" in _problems(raw, keys)
    raw, keys = _raw("dev", inference={"auth": {**AUTH, "algorithm": "HS256"}, "deployments": [DEMO]})
    assert "platform:inferenceJwtSecret = null: is required for inference.auth.algorithm HS256" in _problems(raw, keys)
    raw, keys = _raw("dev", inference={"auth": AUTH, "deployments": [DEMO, DEMO]})
    assert "deployments[1].name = \"demo\": is already used by deployments[0] on eks" in _problems(raw, keys)


@given(st.integers(1, 20), st.integers(1, 20), st.integers(0, 20))
def test_replica_bounds_are_accepted_exactly_when_drains_can_proceed(low, high, floor):
    ok = floor < low <= high
    try:
        ModelDeploymentConfig(**{**DEMO, "replicas": {"min": low, "max": high, "minAvailable": floor}})
    except ValueError:
        assert not ok
    else:
        assert ok


@given(st.integers(1, 3600))
def test_the_pod_outlives_the_servers_drain(grace):
    deployment = ModelDeploymentConfig(**{**DEMO, "server": {"gracePeriodSeconds": grace}})
    assert manifests.termination_grace_seconds(deployment) >= grace + manifests.PRE_STOP_SECONDS + 1


def test_server_settings_reach_the_server_under_its_own_option_names():
    env = manifests.server_environment(ModelDeploymentConfig(**DEMO), _config("dev").inference)
    assert env["DEMO"] == "true" and env["HOST"] == "0.0.0.0"
    assert set(env) <= _server_envvars()
    staging = _config("staging").inference
    env = manifests.server_environment(staging.deployments[0], staging)
    assert env["HF_ENDPOINT"] == staging.hf_endpoint
    assert (env["MODEL_ID"], env["MODEL_REVISION"]) == (staging.deployments[0].model_id, staging.deployments[0].revision)


def test_examples_plan_from_the_cli():
    script = Path(sys.executable).parent / "platformctl"
    result = subprocess.run([str(script), "plan", "--stack", "hybrid", "--stacks-dir", "examples/stacks"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "serving-privatecloud" in result.stdout


def test_downloading_servers_need_egress_to_the_mirror():
    model = {"name": "m", "modelId": "a/b", "revision": "a" * 40, "variant": "cpu", "gpus": 0}
    raw, keys = _raw("dev", inference={"auth": AUTH, "hfEndpoint": "https://models.example.com", "deployments": [model]})
    assert ("platform:inference.egressCidrs = []: must list the mirror's addresses: EKS deployments download from "
            "https://models.example.com") in _problems(raw, keys)
    raw, keys = _raw("dev", inference={"auth": AUTH, "hfEndpoint": "https://models.example.com",
                                       "egressCidrs": ["0.0.0.0/0"], "deployments": [model]})  # fmt: skip
    # dev has no mirror of its own: its servers need the other stack's signing key to trust a download
    assert ("platform:inference.mirrorPublicKey = null: is required: deployments[0] downloads a/b and servers trust "
            "a download only through the mirror's signature") in _problems(raw, keys)
    raw, keys = _raw("dev", inference={"auth": AUTH, "hfEndpoint": "https://models.example.com", "egressCidrs": ["0.0.0.0/0"],
                                       "mirrorPublicKey": "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n",
                                       "deployments": [model]})  # fmt: skip
    parse_config(raw, keys, "stacks/Pulumi.dev.yaml")  # accepted


@pytest.mark.parametrize("stack", ["staging", "prod", "hybrid"])
def test_downloading_servers_verify_the_mirror_signature(all_plans, stack):
    """Every server that downloads mounts the mirror's public key and is told to verify with it."""
    plan = all_plans[stack]
    keys = [r for r in plan.of_type("kubernetes:core/v1:ConfigMap") if r.name.endswith("-mirror-signing-key")]
    assert keys and all(r.inputs["metadata"]["name"] == manifests.MIRROR_KEY_CONFIG_MAP for r in keys)
    assert all(set(r.inputs["data"]) == {"key.pem"} for r in keys)  # KMS's public key: known once the key exists
    checked = 0
    for resource in _deployments(plan):
        settings = _env(resource)
        if "MODEL_ID" not in settings:
            continue
        assert settings["MIRROR_PUBLIC_KEY_FILE"] == f"{manifests.MIRROR_KEY_PATH}/key.pem"
        volumes = {v["name"]: v for v in resource.inputs["spec"]["template"]["spec"]["volumes"]}
        assert volumes["mirror-key"]["configMap"]["name"] == manifests.MIRROR_KEY_CONFIG_MAP
        checked += 1
    assert checked


@pytest.mark.parametrize("stack", ALL)
def test_servers_get_no_kubernetes_api_token(all_plans, stack):
    for resource in _deployments(all_plans[stack]):
        assert resource.inputs["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
