"""What every platform component shares: explicit provider, parent, tags."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_aws as aws

from components.tagging import TagContext


def derived(value: Any, make: Any) -> Any:
    """``make(value)``, now when ``value`` is plain, once known when it is a Pulumi output
    (pure manifest functions take either: tests pass strings, components pass outputs)."""
    return value.apply(make) if isinstance(value, pulumi.Output) else make(value)


class PlatformComponent(pulumi.ComponentResource):
    """A component whose AWS children use the stack's explicit provider and standard tags.

    ``component`` is the value of the ``component`` tag (what finance groups by),
    ``name`` the component's logical name; children are named ``<name>-<suffix>``.
    """

    def __init__(
        self,
        type_token: str,
        name: str,
        component: str,
        tags: TagContext,
        provider: aws.Provider,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(type_token, name, None, opts)
        self._name = name
        self._component = component
        self._tag_context = tags
        self._provider = provider

    def child_name(self, suffix: str) -> str:
        return f"{self._name}-{suffix}"

    def child_opts(self, **kwargs: Any) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(parent=self, provider=self._provider, **kwargs)

    @property
    def stack_prefix(self) -> str:
        """``<project>-<environment>``: prefix of names that must be unique per account (alarms)."""
        return f"{self._tag_context.project}-{self._tag_context.environment}"

    def tags(self, name_suffix: str = "") -> dict[str, str]:
        return self._tag_context.tags(self._component, name_suffix)

    # -- shared building blocks (one place for what several components declare) -----------

    def metric_alarms(self, prefix: str, specs: list, topic_arns: dict[str, pulumi.Input[str]] | None,
                      provider: aws.Provider | None = None) -> list[aws.cloudwatch.MetricAlarm]:  # fmt: skip
        """CloudWatch alarms from :class:`components.alerting.cloudwatch.CloudWatchAlarm` specs, each
        to the alert topic of its severity. No topics (the component used alone): no alarms."""
        if not topic_arns:
            return []
        opts = self.child_opts() if provider is None else pulumi.ResourceOptions(parent=self, provider=provider)
        return [
            aws.cloudwatch.MetricAlarm(
                self.child_name(spec.name), name=f"{prefix}-{spec.name}", alarm_description=f"[{spec.severity}] {spec.description}",
                namespace=spec.namespace, metric_name=spec.metric, statistic=spec.stat, dimensions=spec.dimensions,
                period=spec.period, comparison_operator=spec.comparison, threshold=spec.threshold,
                evaluation_periods=spec.evaluation_periods, datapoints_to_alarm=spec.evaluation_periods,
                treat_missing_data=spec.treat_missing_data, alarm_actions=[topic_arns[spec.severity]],
                ok_actions=[topic_arns[spec.severity]], tags={**self.tags(spec.name), "severity": spec.severity},
                opts=opts,
            )  # fmt: skip
            for spec in specs
        ]

    def private_bucket(self, suffix: str, bucket_name: str, versioned: bool = True, log_delivery: bool = False,
                       kms_key_arn: pulumi.Input[str] | None = None, object_lock: bool = False) -> aws.s3.Bucket:  # fmt: skip
        """An S3 bucket with public access blocked, default encryption and owner-only objects.

        Encryption is SSE-S3, or SSE-KMS with an S3 bucket key when ``kms_key_arn`` is given.
        ``log_delivery``: ACLs stay enabled (BucketOwnerPreferred), as CloudFront's standard
        logs are written with an ACL grant to its log-delivery account. ``object_lock``: Object
        Lock enabled at creation (the only time S3 allows it); versioning comes with it.
        """
        bucket = aws.s3.Bucket(self.child_name(suffix), bucket=bucket_name, force_destroy=False,
                               object_lock_enabled=object_lock or None, tags=self.tags(suffix),
                               opts=self.child_opts())  # fmt: skip
        aws.s3.BucketPublicAccessBlock(
            self.child_name(suffix), bucket=bucket.id, block_public_acls=True, block_public_policy=True,
            ignore_public_acls=True, restrict_public_buckets=True, opts=self.child_opts(),
        )  # fmt: skip
        aws.s3.BucketOwnershipControls(
            self.child_name(suffix), bucket=bucket.id,
            rule={"object_ownership": "BucketOwnerPreferred" if log_delivery else "BucketOwnerEnforced"},
            opts=self.child_opts(),
        )  # fmt: skip
        aws.s3.BucketServerSideEncryptionConfiguration(
            self.child_name(suffix), bucket=bucket.id,
            # SSE-S3 by default: readers such as CloudFront (OAC) need no KMS key policy.
            rules=[{"apply_server_side_encryption_by_default": (
                {"sse_algorithm": "aws:kms", "kms_master_key_id": kms_key_arn} if kms_key_arn is not None
                else {"sse_algorithm": "AES256"}), "bucket_key_enabled": True}],
            opts=self.child_opts(),
        )  # fmt: skip
        if versioned or object_lock:
            aws.s3.BucketVersioning(self.child_name(suffix), bucket=bucket.id,
                                    versioning_configuration={"status": "Enabled"}, opts=self.child_opts())  # fmt: skip
        return bucket

    def pushed_image(self, suffix: str, repository: aws.ecr.Repository, context_dir: str,
                     build_args: dict[str, str], tags: pulumi.Input[list[str]], build_on_preview: bool = True,
                     cache_ref: pulumi.Input[str] | None = None) -> pulumi.Output[str]:  # fmt: skip
        """Build ``context_dir`` for linux/amd64 with pulumi-docker-build, push it to ``repository``
        with ``tags``, and return ``<repository>@sha256:<digest>``: what runs never follows a tag."""
        import pulumi_docker_build as docker_build

        from components.inference.image import pinned_ref

        token = aws.ecr.get_authorization_token_output(registry_id=repository.registry_id,
                                                       opts=pulumi.InvokeOutputOptions(provider=self._provider))  # fmt: skip
        cache: dict[str, Any] = {}
        if cache_ref is not None:
            cache = {
                "cache_from": [docker_build.CacheFromArgs(registry=docker_build.CacheFromRegistryArgs(ref=cache_ref))],
                # image_manifest: what ECR accepts as a cache; ignore_error: a read-only preview
                # role can't write the cache, which must not fail the preview.
                "cache_to": [docker_build.CacheToArgs(registry=docker_build.CacheToRegistryArgs(
                    ref=cache_ref, mode=docker_build.CacheMode.MAX, image_manifest=True, oci_media_types=True,
                    ignore_error=True))],
            }  # fmt: skip
        built = docker_build.Image(
            self.child_name(suffix),
            context=docker_build.BuildContextArgs(location=f"./{context_dir}"),
            dockerfile=docker_build.DockerfileArgs(location=f"./{context_dir}/Dockerfile"),
            platforms=[docker_build.Platform.LINUX_AMD64],
            build_args=build_args,
            tags=tags,
            push=True,
            build_on_preview=build_on_preview,
            registries=[docker_build.RegistryArgs(address=repository.repository_url.apply(lambda url: url.split("/", 1)[0]),
                                                  username=token.user_name, password=token.password)],  # fmt: skip
            **cache,
            opts=pulumi.ResourceOptions(parent=self),
        )
        return pulumi.Output.all(repository.repository_url, built.digest).apply(lambda parts: pinned_ref(*parts))
