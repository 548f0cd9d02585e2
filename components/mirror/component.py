"""``platform:mirror:ModelMirror``: storage, edge, origin and sync schedule of the model mirror.

- S3 bucket of content-addressed blobs and revision metadata (versioned, encrypted, public
  access blocked, readable only by CloudFront through origin access control).
- CloudFront: ``/blobs/*`` straight from S3 (immutable, cached a year; a CloudFront Function
  adds the Hub headers), everything else from the mirror app as a Lambda function URL
  behind OAC (responses by commit cached long, by branch name a minute). TLS from
  ``TLSv1.2_2021``, HTTP/2 and HTTP/3, access logs to a log bucket.
- The app runs from the mirror image (ECR, pulumi-docker-build) through the Lambda Web
  Adapter; the same image runs the scheduled sync as a Kubernetes CronJob on EKS (IRSA: the
  only writer) and, when configured, the private cloud's own mirror.
Decisions (cache policies, manifests, IAM documents) are pure functions in ``policies.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components.alerting.cloudwatch import cloudfront_alarms
from components.base import PlatformComponent
from components.config import MirrorConfig
from components.eks.policies import irsa_trust_policy, service_trust_policy
from components.inference import image as image_identity
from components.mirror import policies
from components.tagging import TagContext

SOURCE_DIR = "components/mirror"


CDN_5XX_PERCENT = 1.0  # of requests, averaged over 5 minutes


@dataclass(frozen=True)
class ModelMirrorArgs:
    config: MirrorConfig
    bucket_name: str
    project_root: Path
    eks_provider: k8s.Provider
    oidc_provider_arn: pulumi.Input[str]
    oidc_issuer: pulumi.Input[str]
    private_cloud_provider: k8s.Provider | None = None
    alarm_topic_arns: dict[str, pulumi.Input[str]] | None = None  # severity -> alert topic; None: no alarms
    region: str = "us-east-1"  # the stack's; CloudFront's metrics are in us-east-1 whatever it is
    onprem_signing_key: pulumi.Input[str] | None = None  # PEM P-256 private key (secret): the on-prem sync signs


class ModelMirror(PlatformComponent):
    def __init__(self, name: str, args: ModelMirrorArgs, tags: TagContext, provider: aws.Provider,
                 opts: pulumi.ResourceOptions | None = None) -> None:  # fmt: skip
        if args.config.private_cloud is not None and args.private_cloud_provider is None:
            raise ValueError(f"{name}: mirror.privateCloud needs the private cloud's Kubernetes provider")
        try:
            revision = image_identity.source_revision(args.project_root, SOURCE_DIR)
        except image_identity.ImageSourceError as exc:
            raise pulumi.RunError(str(exc)) from exc
        super().__init__("platform:mirror:ModelMirror", name, name, tags, provider, opts)
        self._args = args
        config = args.config
        self.public_url = f"https://{config.domain_name}"

        bucket = self.private_bucket("store", args.bucket_name, versioned=True)
        logs = self.private_bucket("logs", f"{args.bucket_name}-logs", versioned=False, log_delivery=True)
        aws.s3.BucketLifecycleConfiguration(
            self.child_name("logs"), bucket=logs.id,
            rules=[{"id": "expire-access-logs", "status": "Enabled", "filter": {"prefix": ""},
                    "expiration": {"days": config.log_retention_days},
                    "abort_incomplete_multipart_upload": {"days_after_initiation": 7}}],
            opts=self.child_opts(),
        )  # fmt: skip
        aws.s3.BucketLifecycleConfiguration(
            self.child_name("store"), bucket=bucket.id,
            # Blobs are content-addressed and never overwritten; superseded refs and manifests
            # leave noncurrent versions behind, which need not live forever.
            rules=[{"id": "noncurrent-versions", "status": "Enabled", "filter": {"prefix": ""},
                    "noncurrent_version_expiration": {"noncurrent_days": 30},
                    "abort_incomplete_multipart_upload": {"days_after_initiation": 7}}],
            opts=self.child_opts(),
        )  # fmt: skip

        image_ref = self._image(revision)
        origin_url = self._origin(bucket, image_ref)
        distribution = self._distribution(bucket, logs, origin_url)
        if args.alarm_topic_arns:
            # CloudFront publishes its metrics in us-east-1 only.
            global_provider = None if args.region == "us-east-1" else aws.Provider(self.child_name("us-east-1"), region="us-east-1",
                                                                                  opts=pulumi.ResourceOptions(parent=self))  # fmt: skip
            self.metric_alarms(args.bucket_name, cloudfront_alarms(distribution.id, CDN_5XX_PERCENT), args.alarm_topic_arns,
                               provider=global_provider)  # fmt: skip
        aws.s3.BucketPolicy(
            self.child_name("store"), bucket=bucket.id,
            policy=pulumi.Output.all(bucket.arn, distribution.arn).apply(
                lambda parts: policies.store_bucket_policy(parts[0], parts[1])),
            opts=self.child_opts(),
        )  # fmt: skip
        aws.lambda_.Permission(
            self.child_name("cloudfront-invoke"), action="lambda:InvokeFunctionUrl", function=self._function.name,
            principal="cloudfront.amazonaws.com", source_arn=distribution.arn, function_url_auth_type="AWS_IAM",
            opts=self.child_opts(),
        )  # fmt: skip
        self._sync_schedule(bucket, image_ref)
        if config.private_cloud is not None:
            self._private_cloud_mirror(image_ref)

        self.bucket_name = bucket.bucket
        self.distribution_domain = distribution.domain_name
        self.register_outputs({"publicUrl": self.public_url, "bucket": self.bucket_name, "signingKeyArn": self.signing_key_arn,
                               "distributionDomain": self.distribution_domain, "image": image_ref})  # fmt: skip

    # -- storage -----------------------------------------------------------------------

    # -- image and origin --------------------------------------------------------------

    def _image(self, revision: image_identity.SourceRevision) -> pulumi.Output[str]:
        repository = aws.ecr.Repository(
            self.child_name("image"), name=f"{self._args.bucket_name}-app", image_tag_mutability="IMMUTABLE",
            image_scanning_configuration={"scan_on_push": True}, encryption_configurations=[{"encryption_type": "AES256"}],
            tags=self.tags("image"), opts=self.child_opts(),
        )  # fmt: skip
        aws.ecr.LifecyclePolicy(self.child_name("image"), repository=repository.name,
                                policy=image_identity.lifecycle_policy(20, 7), opts=self.child_opts())  # fmt: skip
        tag = f"{revision.short_id}-dirty" if revision.dirty else revision.short_id
        return self.pushed_image("image", repository, SOURCE_DIR, build_args={"REVISION": revision.short_id},
                                 tags=[repository.repository_url.apply(lambda url: f"{url}:{tag}")])  # fmt: skip

    def _origin(self, bucket: aws.s3.Bucket, image_ref: pulumi.Output[str]) -> pulumi.Output[str]:
        config = self._args.config
        role = aws.iam.Role(self.child_name("origin"), assume_role_policy=service_trust_policy("lambda.amazonaws.com"),
                            tags=self.tags("origin"), opts=self.child_opts())  # fmt: skip
        aws.iam.RolePolicyAttachment(
            self.child_name("origin-logs"), role=role.name,
            policy_arn="arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole", opts=self.child_opts(),
        )  # fmt: skip
        aws.iam.RolePolicy(self.child_name("origin-read"), role=role.id,
                           policy=bucket.arn.apply(policies.reader_policy), opts=self.child_opts())  # fmt: skip
        log_group = aws.cloudwatch.LogGroup(
            self.child_name("origin"), name=f"/aws/lambda/{self._args.bucket_name}-origin", retention_in_days=30,
            tags=self.tags("origin"), opts=self.child_opts(),
        )  # fmt: skip
        self._function = aws.lambda_.Function(
            self.child_name("origin"), name=f"{self._args.bucket_name}-origin", package_type="Image",
            image_uri=image_ref, role=role.arn, architectures=["x86_64"], memory_size=config.origin_memory_mb,
            timeout=30,
            environment={"variables": {"MIRROR_BUCKET": bucket.bucket, "MIRROR_PUBLIC_URL": f"https://{config.domain_name}",
                                       "AWS_LWA_PORT": "8080", "AWS_LWA_READINESS_CHECK_PATH": "/healthz"}},
            tags=self.tags("origin"), opts=self.child_opts(depends_on=[log_group]),
        )  # fmt: skip
        url = aws.lambda_.FunctionUrl(self.child_name("origin"), function_name=self._function.name,
                                      authorization_type="AWS_IAM", opts=self.child_opts())  # fmt: skip
        return url.function_url

    def _distribution(self, bucket: aws.s3.Bucket, logs: aws.s3.Bucket, origin_url: pulumi.Output[str]
                      ) -> aws.cloudfront.Distribution:  # fmt: skip
        config = self._args.config
        s3_access = aws.cloudfront.OriginAccessControl(
            self.child_name("s3"), name=f"{self._args.bucket_name}-s3", origin_access_control_origin_type="s3",
            signing_behavior="always", signing_protocol="sigv4", opts=self.child_opts(),
        )  # fmt: skip
        lambda_access = aws.cloudfront.OriginAccessControl(
            self.child_name("origin"), name=f"{self._args.bucket_name}-origin",
            origin_access_control_origin_type="lambda", signing_behavior="always", signing_protocol="sigv4",
            opts=self.child_opts(),
        )  # fmt: skip
        api_cache = aws.cloudfront.CachePolicy(self.child_name("api"), name=f"{self._args.bucket_name}-api",
                                               **policies.api_cache_policy(), opts=self.child_opts())  # fmt: skip
        blob_headers = aws.cloudfront.Function(
            self.child_name("blob-headers"), name=f"{self._args.bucket_name}-blob-headers", runtime="cloudfront-js-2.0",
            comment="Hub headers on blob responses", code=policies.edge_function_code(), publish=True,
            tags=self.tags("blob-headers"), opts=self.child_opts(),
        )  # fmt: skip
        return aws.cloudfront.Distribution(
            self.child_name("cdn"),
            **policies.distribution_settings(config),
            origins=[
                {"origin_id": "store", "domain_name": bucket.bucket_regional_domain_name,
                 "origin_access_control_id": s3_access.id},
                {"origin_id": "app", "domain_name": origin_url.apply(policies.url_host),
                 "origin_access_control_id": lambda_access.id,
                 "custom_origin_config": {"http_port": 80, "https_port": 443, "origin_protocol_policy": "https-only",
                                          "origin_ssl_protocols": ["TLSv1.2"]}},
            ],
            default_cache_behavior={**policies.API_BEHAVIOR, "cache_policy_id": api_cache.id},
            ordered_cache_behaviors=[{**policies.BLOB_BEHAVIOR,
                                      "function_associations": [{"event_type": "viewer-response",
                                                                 "function_arn": blob_headers.arn}]}],  # fmt: skip
            logging_config={"bucket": logs.bucket_domain_name, "include_cookies": False, "prefix": "cloudfront/"},
            tags=self.tags("cdn"),
            opts=self.child_opts(),
        )

    # -- sync --------------------------------------------------------------------------

    def _sync_schedule(self, bucket: aws.s3.Bucket, image_ref: pulumi.Output[str]) -> None:
        args = self._args
        trust = pulumi.Output.all(args.oidc_provider_arn, args.oidc_issuer).apply(
            lambda parts: irsa_trust_policy(parts[0], parts[1], policies.NAMESPACE, policies.SYNC_SERVICE_ACCOUNT))
        role = aws.iam.Role(self.child_name("sync"), assume_role_policy=trust, tags=self.tags("sync"),
                            opts=self.child_opts())  # fmt: skip
        aws.iam.RolePolicy(self.child_name("sync-write"), role=role.id, policy=bucket.arn.apply(policies.writer_policy),
                           opts=self.child_opts())  # fmt: skip
        key = self._signing_key(role)
        k8s_opts = pulumi.ResourceOptions(parent=self, provider=args.eks_provider)
        namespace = k8s.core.v1.Namespace(self.child_name("namespace"), metadata=policies.namespace_metadata(),
                                          opts=k8s_opts)  # fmt: skip
        after = pulumi.ResourceOptions(parent=self, provider=args.eks_provider, depends_on=[namespace])
        account = policies.sync_service_account(role.arn)
        k8s.core.v1.ServiceAccount(self.child_name("sync"), metadata=account["metadata"],
                                   automount_service_account_token=False, opts=after)  # fmt: skip
        job = policies.sync_cronjob(args.config, image_ref, bucket.bucket, upstream=args.config.upstream, signing_key=key.arn)
        k8s.batch.v1.CronJob(self.child_name("sync"), metadata=job["metadata"], spec=job["spec"], opts=after)
        policy = policies.sync_network_policy()
        k8s.networking.v1.NetworkPolicy(self.child_name("sync"), metadata=policy["metadata"], spec=policy["spec"],
                                        opts=after)  # fmt: skip

    def _signing_key(self, sync_role: aws.iam.Role) -> aws.kms.Key:
        """An asymmetric key that signs each published manifest (P-256; asymmetric keys don't rotate:
        a new key means a new public key for the servers)."""
        identity = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=self, provider=self._provider))
        key = aws.kms.Key(
            self.child_name("signing"), description="Signs the model mirror's revision manifests",
            key_usage="SIGN_VERIFY", customer_master_key_spec="ECC_NIST_P256", enable_key_rotation=False,
            policy=pulumi.Output.all(identity.account_id, sync_role.arn).apply(lambda v: policies.signing_key_policy(*v)),
            tags=self.tags("signing"), opts=self.child_opts())  # fmt: skip
        aws.kms.Alias(self.child_name("signing"), name=f"alias/{self._args.bucket_name}-signing", target_key_id=key.key_id,
                      opts=self.child_opts())  # fmt: skip
        aws.iam.RolePolicy(self.child_name("sync-sign"), role=sync_role.id, policy=key.arn.apply(policies.signer_policy),
                           opts=self.child_opts())  # fmt: skip
        self.signing_key_arn = key.arn
        # What the model servers verify signatures with (PEM; no KMS call at load time).
        self.signing_public_key = aws.kms.get_public_key_output(
            key_id=key.arn, opts=pulumi.InvokeOutputOptions(parent=self, provider=self._provider)).public_key_pem
        return key

    def _private_cloud_mirror(self, image_ref: pulumi.Output[str]) -> None:
        args = self._args
        onprem = args.config.private_cloud
        assert onprem is not None and args.private_cloud_provider is not None
        k8s_opts = pulumi.ResourceOptions(parent=self, provider=args.private_cloud_provider)
        namespace = k8s.core.v1.Namespace(self.child_name("onprem-namespace"), metadata=policies.namespace_metadata(),
                                          opts=k8s_opts)  # fmt: skip
        after = pulumi.ResourceOptions(parent=self, provider=args.private_cloud_provider, depends_on=[namespace])
        signs = args.onprem_signing_key is not None
        if signs:
            secret = policies.onprem_signing_secret(pulumi.Output.secret(args.onprem_signing_key))
            k8s.core.v1.Secret(self.child_name("onprem-signing-key"), metadata=secret["metadata"], type=secret["type"],
                               string_data=secret["stringData"], opts=after)  # fmt: skip
        for manifest in policies.private_cloud_objects(args.config, image_ref, self.public_url, signs):
            kind = manifest["kind"]
            resource = {"Deployment": k8s.apps.v1.Deployment, "Service": k8s.core.v1.Service,
                        "CronJob": k8s.batch.v1.CronJob, "NetworkPolicy": k8s.networking.v1.NetworkPolicy,
                        "PodDisruptionBudget": k8s.policy.v1.PodDisruptionBudget}[kind]  # fmt: skip
            resource(self.child_name(f"onprem-{manifest['metadata']['name']}-{kind.lower()}"),
                     metadata=manifest["metadata"], spec=manifest["spec"], opts=after)  # fmt: skip
