"""The mirror's AWS and Kubernetes resources in every stack's plan that configures one."""

from __future__ import annotations

import dataclasses
import json

import kubernetes_validate
import pytest

from components.mirror import policies
from platformctl.offline import UNKNOWN, run_offline_plan

from ..conftest import ROOT

MIRRORED = ["staging", "prod", "hybrid"]


@pytest.fixture(scope="module")
def mirror_plans(plans, project):
    hybrid = run_offline_plan(dataclasses.replace(project, stack_config_dir=ROOT / "examples" / "stacks"), "hybrid")
    return {"staging": plans["staging"], "prod": plans["prod"], "hybrid": hybrid, "dev": plans["dev"]}


def _named(plan, type_token: str) -> dict:
    return {r.name: r.inputs for r in plan.of_type(type_token)}


def test_dev_has_no_mirror(mirror_plans):
    assert not [r for r in mirror_plans["dev"].resources if r.name.startswith("mirror")]


@pytest.mark.parametrize("stack", MIRRORED)
def test_buckets_are_private_encrypted_and_only_cloudfront_reads_blobs(mirror_plans, stack):
    plan = mirror_plans[stack]
    buckets = _named(plan, "aws:s3/bucket:Bucket")
    assert buckets["mirror-store"]["bucket"] == f"platform-{stack}-model-mirror"
    for name in ("mirror-store", "mirror-logs"):
        block = _named(plan, "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")[name]
        assert all(block[k] is True for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls",
                                               "restrictPublicBuckets"))  # fmt: skip
        sse = _named(plan, "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration")[name]
        assert sse["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "AES256"
    versioning = _named(plan, "aws:s3/bucketVersioning:BucketVersioning")
    assert versioning["mirror-store"]["versioningConfiguration"] == {"status": "Enabled"}
    policy = json.loads(policies.store_bucket_policy("arn:aws:s3:::b", "arn:aws:cloudfront::1:distribution/D"))
    [read, tls] = policy["Statement"]
    assert read["Principal"] == {"Service": "cloudfront.amazonaws.com"} and read["Resource"] == "arn:aws:s3:::b/blobs/*"
    assert read["Condition"]["StringEquals"]["AWS:SourceArn"] == "arn:aws:cloudfront::1:distribution/D"
    assert tls["Effect"] == "Deny" and tls["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    [bucket_policy] = [r for r in plan.of_type("aws:s3/bucketPolicy:BucketPolicy") if r.name == "mirror-store"]
    assert bucket_policy.inputs["policy"] == UNKNOWN  # needs the distribution's ARN
    cdn = plan.named("mirror-cdn")
    assert set(bucket_policy.dependencies["policy"]) >= {cdn.urn}


@pytest.mark.parametrize("stack", MIRRORED)
def test_the_edge_is_tls12_2021_http3_logged_and_routes_blobs_to_s3(mirror_plans, stack):
    plan = mirror_plans[stack]
    cdn = plan.named("mirror-cdn").inputs
    assert cdn["viewerCertificate"]["minimumProtocolVersion"] == "TLSv1.2_2021"
    assert cdn["viewerCertificate"]["sslSupportMethod"] == "sni-only"
    assert cdn["httpVersion"] == "http2and3"
    assert cdn["loggingConfig"]["prefix"] == "cloudfront/"
    assert cdn["defaultCacheBehavior"]["viewerProtocolPolicy"] == "redirect-to-https"
    assert cdn["defaultCacheBehavior"]["targetOriginId"] == "app"
    [blobs] = cdn["orderedCacheBehaviors"]
    assert (blobs["pathPattern"], blobs["targetOriginId"]) == ("/blobs/*", "store")
    assert blobs["functionAssociations"][0]["eventType"] == "viewer-response"
    origins = {o["originId"]: o for o in cdn["origins"]}
    assert origins["app"]["customOriginConfig"]["originProtocolPolicy"] == "https-only"
    oacs = _named(plan, "aws:cloudfront/originAccessControl:OriginAccessControl")
    assert {o["originAccessControlOriginType"] for o in oacs.values()} == {"s3", "lambda"}
    assert all(o["signingBehavior"] == "always" for o in oacs.values())
    url = _named(plan, "aws:lambda/functionUrl:FunctionUrl")["mirror-origin"]
    assert url["authorizationType"] == "AWS_IAM"  # only CloudFront, signing through OAC, may call it
    permission = _named(plan, "aws:lambda/permission:Permission")["mirror-cloudfront-invoke"]
    assert (permission["principal"], permission["action"]) == ("cloudfront.amazonaws.com", "lambda:InvokeFunctionUrl")
    function = _named(plan, "aws:cloudfront/function:Function")["mirror-blob-headers"]
    assert function["runtime"] == "cloudfront-js-2.0" and function["code"] == policies.edge_function_code()


def test_price_class_and_geo_restriction_come_from_config(mirror_plans):
    prod = mirror_plans["prod"].named("mirror-cdn").inputs
    assert prod["priceClass"] == "PriceClass_200"
    assert prod["restrictions"]["geoRestriction"] == {"restrictionType": "none", "locations": []}
    hybrid = mirror_plans["hybrid"].named("mirror-cdn").inputs
    assert hybrid["restrictions"]["geoRestriction"] == {"restrictionType": "whitelist", "locations": ["US", "DE"]}


def test_the_edge_may_only_read_and_the_sync_is_the_only_writer():
    reader = json.loads(policies.reader_policy("arn:aws:s3:::b"))
    writer = json.loads(policies.writer_policy("arn:aws:s3:::b"))
    actions = lambda doc: {a for s in doc["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}  # noqa: E731
    assert actions(reader) == {"s3:ListBucket", "s3:GetObject"}
    assert "s3:PutObject" in actions(writer) and not {a for a in actions(writer) if "Delete" in a}


@pytest.mark.parametrize("stack", MIRRORED)
def test_origin_runs_the_mirror_image_by_digest_and_sync_is_a_daily_cronjob_with_irsa(mirror_plans, stack):
    plan = mirror_plans[stack]
    function = _named(plan, "aws:lambda/function:Function")["mirror-origin"]
    assert function["packageType"] == "Image" and function["imageUri"] == UNKNOWN  # the pushed digest
    [build] = [r for r in plan.of_type("docker-build:index:Image") if r.name == "mirror-image"]
    [origin] = [r for r in plan.of_type("aws:lambda/function:Function") if r.name == "mirror-origin"]
    assert build.urn in origin.dependencies["imageUri"]
    assert build.inputs["context"] == {"location": "./components/mirror"}
    [cronjob] = [r for r in plan.of_type("kubernetes:batch/v1:CronJob") if r.name == "mirror-sync"]
    spec = cronjob.inputs["spec"]
    assert spec["schedule"] == "17 3 * * *" and spec["concurrencyPolicy"] == "Forbid"
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == policies.SYNC_SERVICE_ACCOUNT
    args = pod["containers"][0]["args"]
    assert args[:2] == ["sync", "--bucket"] and "--no-progress" in args
    assert "Qwen/Qwen2.5-7B-Instruct@a09a35458c702b33eeacc393d103063234e8bc28" in args
    [account] = [r for r in plan.of_type("kubernetes:core/v1:ServiceAccount") if r.name == "mirror-sync"]
    assert account.inputs["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == UNKNOWN
    for resource in plan.resources:
        if resource.type.startswith("kubernetes:") and resource.name.startswith("mirror-") and resource.custom:
            if resource.type.startswith("pulumi:providers"):
                continue
            kubernetes_validate.validate(_redacted(resource.inputs), "1.33.0", strict=True)


def test_the_private_cloud_runs_its_own_mirror_synced_from_the_aws_one(mirror_plans):
    plan = mirror_plans["hybrid"]
    [provider] = [r for r in plan.resources if r.type == "pulumi:providers:kubernetes" and r.name == "private-cloud"]
    onprem = [r for r in plan.resources if r.name.startswith("mirror-onprem-")]
    assert {r.type for r in onprem} >= {"kubernetes:apps/v1:Deployment", "kubernetes:core/v1:Service",
                                        "kubernetes:batch/v1:CronJob", "kubernetes:core/v1:Namespace"}  # fmt: skip
    assert all(r.provider.startswith(provider.urn) for r in onprem)
    [sync] = [r for r in onprem if r.type == "kubernetes:batch/v1:CronJob"]
    args = sync.inputs["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--upstream") + 1] == "https://models.platform.example.com"
    [app] = [r for r in onprem if r.type == "kubernetes:apps/v1:Deployment"]
    env = {e["name"]: e for e in app.inputs["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["AWS_ENDPOINT_URL_S3"]["value"] == "https://s3.onprem.example.com"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "mirror-store-credentials"
    for resource in onprem:
        kubernetes_validate.validate(_redacted(resource.inputs), "1.32.0", strict=True)


def _redacted(manifest: dict) -> dict:
    """pulumi-kubernetes sends a Secret's data as one secret value; validate its shape with a stand-in."""
    if manifest["kind"] == "Secret":
        assert manifest["stringData"] == "[secret]"
        return {**manifest, "stringData": {"key.pem": "redacted"}}
    return manifest


def test_mirror_config_mistakes_name_their_keys():
    from components.config import ConfigError, parse_config
    from platformctl.project import load_project, read_stack_config

    raw, keys = read_stack_config(load_project(ROOT), "staging")
    mirror = json.loads(raw["platform:mirror"])
    cases = [
        ({**mirror, "certificateArn": "arn:aws:acm:eu-west-1:111122223333:certificate/x"}, "platform:mirror.certificateArn"),
        ({**mirror, "schedule": "daily"}, "platform:mirror.schedule = \"daily\": must be a 5-field cron"),
        ({**mirror, "geoRestriction": {"restrictionType": "whitelist"}}, "platform:mirror.geoRestriction.locations"),
        ({**mirror, "privateCloud": {"bucket": "m", "s3Endpoint": "https://s3", "credentialsSecret": "c"}},
         "platform:mirror.privateCloud"),
        ({**mirror, "repos": [{"repo": "a/b"}, {"repo": "a/b"}]}, "lists a repo and revision more than once"),
    ]
    for value, expected in cases:
        with pytest.raises(ConfigError) as caught:
            parse_config({**raw, "platform:mirror": json.dumps(value)}, keys, "stacks/Pulumi.staging.yaml")
        assert expected in str(caught.value), str(caught.value)


def test_on_prem_pods_may_reach_a_store_on_its_own_port():
    from components.config import MirrorConfig

    config = MirrorConfig(domain_name="models.example.com",
                          certificate_arn="arn:aws:acm:us-east-1:111122223333:certificate/x",
                          private_cloud={"bucket": "models", "s3Endpoint": "http://minio.storage:9000",
                                         "credentialsSecret": "minio"})  # fmt: skip
    objects = {(o["kind"], o["metadata"]["name"]): o for o in policies.private_cloud_objects(config, "img", "https://m")}
    for name in ("mirror", "mirror-sync"):
        egress = objects[("NetworkPolicy", name)]["spec"]["egress"]
        assert {p["port"] for p in egress[-1]["ports"]} == {443, 9000}
