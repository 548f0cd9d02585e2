"""The entries in every stack's offline plan: TLS policy, redirect, health check, WAF, records, nginx."""

from __future__ import annotations

import dataclasses
import json

import kubernetes_validate
import pytest

from components.config import TLS13_SSL_POLICIES
from components.ingress import policies
from components.inference import load_balancer_cidrs
from inference_server.api import ServerSettings, create_app
from platformctl.common import load_stack_config
from platformctl.offline import run_offline_plan

from ..conftest import ROOT, STACKS

ALB = "alb.ingress.kubernetes.io/"


@pytest.fixture(scope="module")
def hybrid(project):
    return run_offline_plan(dataclasses.replace(project, stack_config_dir=ROOT / "examples" / "stacks"), "hybrid")


def _named(plan, prefix):
    return {r.name: r for r in plan.resources if r.name.startswith(prefix) and r.custom}


@pytest.mark.parametrize("stack", STACKS)
def test_each_exposed_deployment_gets_a_tls13_https_only_ingress(plans, stack):
    plan, config = plans[stack], load_stack_config(stack, ROOT)
    entry = config.inference.ingress.eks
    exposed = [d for d in config.inference.on("eks") if d.expose]
    assert entry is not None and exposed, "every stack exposes a deployment on EKS"
    resources = _named(plan, "ingress-eks-")
    web_acl, release = resources["ingress-eks-waf"], resources["ingress-eks-controller"]
    storage_logs = next(r for r in plan.resources if r.name == "storage-access-logs" and r.type == "aws:s3/bucket:Bucket")
    for deployment in exposed:
        ingress = resources[f"ingress-eks-{deployment.name}"]
        manifest = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", **ingress.inputs}
        annotations = manifest["metadata"]["annotations"]
        assert annotations[ALB + "ssl-policy"] == entry.ssl_policy in TLS13_SSL_POLICIES
        assert json.loads(annotations[ALB + "listen-ports"]) == [{"HTTP": 80}, {"HTTPS": 443}]
        assert annotations[ALB + "ssl-redirect"] == "443"  # HTTP answers with a redirect only
        assert annotations[ALB + "scheme"] == entry.scheme and annotations[ALB + "target-type"] == "ip"
        assert annotations[ALB + "healthcheck-path"] == "/readyz"
        assert web_acl.urn in ingress.dependencies["metadata"]  # wafv2-acl-arn: the web ACL's ARN
        assert storage_logs.urn in ingress.dependencies["metadata"]  # access logs: tiered storage's log bucket
        assert release.urn in ingress.depends_on  # the controller's webhook and IngressClass first
        rule = manifest["spec"]["rules"][0]
        assert rule["host"] == f"{deployment.name}.{entry.domain}" and manifest["spec"]["ingressClassName"] == "alb"
        backend = rule["http"]["paths"][0]["backend"]["service"]
        # A port the Service has (by number), or, under a canary, Argo Rollouts' action annotation on it.
        service = plan.named(f"serving-eks-{backend['name']}-service").inputs["spec"]
        if deployment.canary is None:
            assert backend["port"]["number"] in {port["port"] for port in service["ports"]}
        else:
            assert backend == {"name": deployment.name, "port": {"name": "use-annotation"}}
        policy = plan.named(f"serving-eks-{deployment.name}-networkpolicy").inputs["spec"]
        admitted = {p["ipBlock"]["cidr"] for p in policy["ingress"][0]["from"] if "ipBlock" in p}
        assert set(load_balancer_cidrs(config)) <= admitted  # the ALB reaches the pods (IP targets)
    names = [r["name"] for r in web_acl.inputs["rules"]]
    assert names[:3] == entry.waf.managed_rule_groups and names[3:] == ["body-too-large", "rate-per-ip"]
    assert web_acl.inputs["rules"][4]["statement"]["rateBasedStatement"]["limit"] == entry.waf.rate_limit_per_5_minutes
    assert web_acl.inputs["visibilityConfig"]["cloudwatchMetricsEnabled"] is True
    assert web_acl.inputs["scope"] == "REGIONAL"
    values = release.inputs["values"]
    assert values["enableWafv2"] is True and values["serviceAccount"]["name"] == policies.CONTROLLER_SERVICE_ACCOUNT
    assert resources["ingress-eks-controller"].inputs["version"] == entry.controller_chart_version
    [role_policy] = [r for r in plan.of_type("aws:iam/rolePolicy:RolePolicy") if r.name == "ingress-eks-controller"]
    assert json.loads(role_policy.inputs["policy"]) == json.loads(policies.controller_policy())
    if entry.hosted_zone_id:
        records = {r.name: r.inputs for r in plan.of_type("aws:route53/record:Record") if r.name.startswith("ingress-eks-")}
        assert {f"ingress-eks-{d.name}-dns" for d in exposed} | {"ingress-eks-certificate-validation"} == set(records)
        assert all(r["zoneId"] == entry.hosted_zone_id for r in records.values())
        [certificate] = plan.of_type("aws:acm/certificate:Certificate")
        assert certificate.inputs["domainName"] == f"*.{entry.domain}" and certificate.inputs["validationMethod"] == "DNS"
    assert plan.stack_outputs["modelEndpoints"] == {d.name: f"https://{d.name}.{entry.domain}" for d in exposed}


@pytest.mark.parametrize("stack", STACKS)
def test_every_ingress_is_a_valid_kubernetes_object(plans, stack):
    ingresses = plans[stack].of_type("kubernetes:networking.k8s.io/v1:Ingress")
    assert ingresses  # every stack exposes something: an empty walk must not pass
    for resource in ingresses:
        manifest = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", **resource.inputs}
        manifest["metadata"]["annotations"] = {k: v if isinstance(v, str) else "unknown"
                                               for k, v in manifest["metadata"]["annotations"].items()}  # fmt: skip
        kubernetes_validate.validate(manifest, "1.33.0", strict=True)


def test_the_health_check_path_is_a_route_the_server_serves():
    paths = {route.path for route in create_app(ServerSettings(), load=lambda: None).routes}
    assert policies.HEALTH_PATH in paths


def test_idle_timeout_shorter_than_a_request_is_refused():
    from components.config import InferenceConfig

    with pytest.raises(ValueError, match="requestTimeoutSeconds .120.: the ALB would cut streams"):
        InferenceConfig(ingress={"eks": {"domain": "i.example.com", "idleTimeoutSeconds": 60}},
                        auth={"issuer": "https://i", "publicKey": "k"},
                        deployments=[{"name": "d", "demo": True, "variant": "cpu", "gpus": 0, "expose": True,
                                      "server": {"requestTimeoutSeconds": 120}}])  # fmt: skip
    with pytest.raises(ValueError, match=r"needs inference.ingress.eks"):
        InferenceConfig(auth={"issuer": "https://i", "publicKey": "k"},
                        deployments=[{"name": "d", "demo": True, "variant": "cpu", "gpus": 0, "expose": True}])  # fmt: skip


def test_the_private_cloud_entry_is_ingress_nginx_with_tls13(hybrid):
    config = load_stack_config("hybrid", ROOT, ROOT / "examples" / "stacks")
    entry = config.inference.ingress.private_cloud
    resources = _named(hybrid, "ingress-private-cloud-")
    release = resources["ingress-private-cloud-controller"]
    assert (release.inputs["chart"], release.inputs["version"]) == ("ingress-nginx", entry.chart_version)
    settings = release.inputs["values"]["controller"]["config"]
    assert settings["ssl-protocols"] == "TLSv1.3" and settings["allow-snippet-annotations"] == "false"
    assert settings["proxy-real-ip-cidr"] == "192.168.40.0/28" and settings["use-forwarded-headers"] == "true"
    secret = resources["ingress-private-cloud-tls"]
    assert secret.inputs["type"] == "kubernetes.io/tls"
    ingress = resources["ingress-private-cloud-qwen-7b"].inputs
    assert ingress["spec"]["ingressClassName"] == entry.class_name
    assert ingress["spec"]["tls"] == [{"hosts": [f"qwen-7b.{entry.domain}"], "secretName": "inference-ingress-tls"}]
    assert release.urn in resources["ingress-private-cloud-qwen-7b"].depends_on
    # EKS there uses a given certificate and no zone: no ACM certificate or records are declared.
    assert not hybrid.of_type("aws:acm/certificate:Certificate") and not hybrid.of_type("aws:route53/record:Record")
