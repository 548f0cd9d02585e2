"""``platform:storage:Tiers`` — cold S3 classes with lifecycle, a Firehose ingest buffer, Fluent Bit on EKS."""

from __future__ import annotations

import json
from dataclasses import dataclass
import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components import kubernetes
from components.base import PlatformComponent
from components.config import StorageConfig
from components.eks.policies import irsa_trust_policy, service_trust_policy
from components.alerting.cloudwatch import firehose_alarms
from components.storage import audit, firehose, lifecycle, shipping
from components.tagging import TagContext



def storage_key_policy(account_id: str) -> str:
    """The account administers the key; IAM policies grant its use (Firehose's role, readers)."""
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "AccountAdministers", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{account_id}:root"},
         "Action": "kms:*", "Resource": "*"}]})  # fmt: skip


@dataclass(frozen=True)
class TieredStorageArgs:
    config: StorageConfig
    name_prefix: str  # <project>-<environment>: bucket, stream and log group names
    region: str
    k8s_provider: k8s.Provider
    oidc_provider_arn: pulumi.Input[str]
    oidc_issuer: pulumi.Input[str]
    alarm_topic_arns: dict[str, pulumi.Input[str]] | None = None  # severity -> alert topic; None: no alarms
    private_cloud_provider: k8s.Provider | None = None  # its audit events ship here too (storage.privateCloudAudit)


class TieredStorage(PlatformComponent):
    """Cold buckets per data class (SSE-KMS, lifecycle down to Deep Archive, TLS only, access
    logs, Object Lock where configured), Firehose into the logs bucket and a second stream
    into the Object-Locked audit bucket, Fluent Bit shipping to both, and the Glue table and
    Athena workgroup that query the audit events (:mod:`components.storage.audit`).

    The hot tier (node-local disks) is part of the GPU nodes' launch templates
    (``components/gpu``); its sizes come from the same config (:mod:`components.storage.shipping`).

    Outputs: ``bucket_names`` (class → name), ``stream_name``, ``audit_stream_name``,
    ``audit_stream_arn`` (the failover agents put their events there), ``kms_key_arn``,
    ``audit_workgroup``; ``access_log_bucket`` (SSE-S3: S3 server access logs, and load
    balancer access logs under ``alb/``).
    """

    def __init__(self, name: str, args: TieredStorageArgs, tags: TagContext, provider: aws.Provider,
                 opts: pulumi.ResourceOptions | None = None) -> None:  # fmt: skip
        config = args.config
        sizing = shipping.hot_sizing(config.hot, config.shipping)  # validates before anything is declared
        super().__init__("platform:storage:Tiers", name, "storage", tags, provider, opts)
        identity = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=self, provider=provider))
        key = aws.kms.Key(self.child_name("data"), description=f"{args.name_prefix}: cold tier and log ingest",
                          enable_key_rotation=True, policy=identity.account_id.apply(storage_key_policy),
                          tags=self.tags("data"), opts=self.child_opts())  # fmt: skip

        # S3 server access logs can't go to an SSE-KMS bucket: this one uses SSE-S3.
        access_logs = self.private_bucket("access-logs", f"{args.name_prefix}-access-logs", versioned=False)
        aws.s3.BucketLifecycleConfiguration(
            self.child_name("access-logs"), bucket=access_logs.id,
            rules=lifecycle.to_pulumi(lifecycle.lifecycle_rules([], config.access_log_retention_days, 1)),
            opts=self.child_opts())  # fmt: skip

        self.buckets: dict[str, aws.s3.Bucket] = {}
        for data_class, settings in config.classes.items():
            bucket = self.private_bucket(data_class, f"{args.name_prefix}-{data_class}", kms_key_arn=key.arn,
                                         object_lock=settings.object_lock_days is not None)  # fmt: skip
            rules = lifecycle.lifecycle_rules(settings.transitions(), settings.expire_days, settings.noncurrent_expire_days)
            aws.s3.BucketLifecycleConfiguration(self.child_name(data_class), bucket=bucket.id,
                                                rules=lifecycle.to_pulumi(rules), opts=self.child_opts())  # fmt: skip
            aws.s3.BucketPolicy(self.child_name(data_class), bucket=bucket.id,
                                policy=bucket.arn.apply(lambda arn: json.dumps(lifecycle.tls_only_policy(arn))),
                                opts=self.child_opts())  # fmt: skip
            aws.s3.BucketLogging(self.child_name(data_class), bucket=bucket.id, target_bucket=access_logs.id,
                                 target_prefix=f"{data_class}/", opts=self.child_opts())  # fmt: skip
            if settings.object_lock_days is not None:
                lock = lifecycle.object_lock_configuration(settings.object_lock_days)
                aws.s3.BucketObjectLockConfiguration(self.child_name(data_class), bucket=bucket.id,
                                                     **lifecycle.to_pulumi(lock), opts=self.child_opts())  # fmt: skip
            self.buckets[data_class] = bucket
        elb = aws.elb.get_service_account_output(opts=pulumi.InvokeOutputOptions(parent=self, provider=provider))
        aws.s3.BucketPolicy(
            self.child_name("access-logs"), bucket=access_logs.id,
            policy=pulumi.Output.all(access_logs.arn, identity.account_id, elb.id, *[b.arn for b in self.buckets.values()]
                                     ).apply(lambda v: json.dumps(lifecycle.access_log_bucket_policy(v[0], v[1], v[3:], v[2]))),
            opts=self.child_opts())  # fmt: skip
        self.access_log_bucket = access_logs  # load balancers log here too (ingress)

        interval = config.firehose.buffering_interval_seconds
        # Child names of the logs stream predate the audit stream: kept, so no stack replaces it.
        stream = self._firehose(args, key, firehose.LOGS, role_name="firehose", stream_name="logs")
        audit_stream = self._firehose(args, key, firehose.AUDIT, role_name="audit-firehose", stream_name="audit-stream")
        self.metric_alarms(args.name_prefix, firehose_alarms(stream.name, interval) + firehose_alarms(
            audit_stream.name, interval, name="audit-firehose", records="audit events"), args.alarm_topic_arns)  # fmt: skip
        self._shipper(args, stream, audit_stream, sizing)
        if args.private_cloud_provider is not None and config.private_cloud_audit:
            self._private_cloud_audit(args, audit_stream, sizing)
        self.audit_workgroup = self._audit_queries(args, key)
        self.bucket_names = {data_class: bucket.bucket for data_class, bucket in self.buckets.items()}
        self.stream_name, self.audit_stream_name, self.audit_stream_arn = stream.name, audit_stream.name, audit_stream.arn
        self.kms_key_arn = key.arn
        self.register_outputs({"bucket_names": self.bucket_names, "stream_name": stream.name, "kms_key_arn": key.arn,
                               "audit_stream_name": audit_stream.name, "audit_workgroup": self.audit_workgroup})  # fmt: skip

    def _firehose(self, args: TieredStorageArgs, key: aws.kms.Key, layout: firehose.StreamLayout, *, role_name: str,
                  stream_name: str) -> aws.kinesis.FirehoseDeliveryStream:  # fmt: skip
        config, name = args.config.firehose, f"{args.name_prefix}-{layout.suffix}"
        bucket = self.buckets[layout.data_class]
        log_group = aws.cloudwatch.LogGroup(self.child_name(role_name), name=f"/aws/kinesisfirehose/{name}",
                                            retention_in_days=config.error_retention_days, tags=self.tags(role_name),
                                            opts=self.child_opts())  # fmt: skip
        aws.cloudwatch.LogStream(self.child_name(role_name), name="S3Delivery", log_group_name=log_group.name,
                                 opts=self.child_opts())  # fmt: skip
        role = aws.iam.Role(self.child_name(role_name), description=f"Firehose delivers records to the {layout.data_class} bucket",
                            assume_role_policy=service_trust_policy("firehose.amazonaws.com"), tags=self.tags(role_name),
                            opts=self.child_opts())  # fmt: skip
        policy = aws.iam.RolePolicy(
            self.child_name(role_name), role=role.id,
            policy=pulumi.Output.all(bucket.arn, key.arn, log_group.arn).apply(
                lambda v: json.dumps(firehose.delivery_role_policy(*v))),
            opts=self.child_opts())  # fmt: skip
        # ARNs are outputs; the structure around them is known now (and in the offline plan).
        destination = firehose.to_pulumi_destination(firehose.destination(
            role_arn=role.arn, bucket_arn=bucket.arn, kms_key_arn=key.arn, log_group=f"/aws/kinesisfirehose/{name}",
            buffering_size_mb=config.buffering_size_mb, buffering_interval_seconds=config.buffering_interval_seconds,
            layout=layout))  # fmt: skip
        return aws.kinesis.FirehoseDeliveryStream(
            self.child_name(stream_name), name=name, destination="extended_s3",
            extended_s3_configuration=destination,
            server_side_encryption={"enabled": True, "key_type": "CUSTOMER_MANAGED_CMK", "key_arn": key.arn},
            tags=self.tags(stream_name), opts=self.child_opts(depends_on=[policy]),
        )  # fmt: skip

    def _audit_queries(self, args: TieredStorageArgs, key: aws.kms.Key) -> pulumi.Output[str]:
        """The Glue table over the audit bucket, and an Athena workgroup with the saved queries.

        Query results go to the logs bucket under ``athena-results/`` (KMS-encrypted): the audit
        bucket stays write-once, holding only what Firehose delivered.
        """
        database = aws.glue.CatalogDatabase(
            self.child_name("audit"), name=f"{args.name_prefix}-audit".replace("-", "_"),
            description="Audit events of the platform (docs/audit.md)", tags=self.tags("audit"), opts=self.child_opts())  # fmt: skip
        bucket = self.buckets[firehose.AUDIT.data_class]
        table = bucket.bucket.apply(lambda name: audit.to_pulumi_table(audit.table_input(name)))
        aws.glue.CatalogTable(self.child_name("audit"), database_name=database.name,
                              **{key: table[key] for key in ("name", "description", "table_type", "partition_keys",
                                                            "parameters", "storage_descriptor")},
                              opts=self.child_opts())  # fmt: skip
        results = self.buckets[firehose.LOGS.data_class]
        workgroup = aws.athena.Workgroup(
            self.child_name("audit"), name=f"{args.name_prefix}-audit", description="Queries over the audit events",
            force_destroy=False, tags=self.tags("audit"),
            configuration={
                "enforce_workgroup_configuration": True, "publish_cloudwatch_metrics_enabled": True,
                "bytes_scanned_cutoff_per_query": args.config.audit_query_scan_limit_gb * 1024**3,
                "result_configuration": {
                    "output_location": results.bucket.apply(lambda b: f"s3://{b}/athena-results/"),
                    "encryption_configuration": {"encryption_option": "SSE_KMS", "kms_key_arn": key.arn},
                },
            },
            opts=self.child_opts())  # fmt: skip
        for query_name, (description, sql) in audit.QUERIES.items():
            aws.athena.NamedQuery(self.child_name(f"audit-{query_name}"), name=query_name, description=description,
                                  database=database.name, query=sql, workgroup=workgroup.name,
                                  opts=self.child_opts())  # fmt: skip
        return workgroup.name

    def _private_cloud_audit(self, args: TieredStorageArgs, audit_stream: aws.kinesis.FirehoseDeliveryStream,
                             sizing: shipping.HotSizing) -> None:  # fmt: skip
        """Fluent Bit in the private cloud, shipping its audit events (nothing else) to the audit
        stream. No IRSA there: an IAM user whose only right is putting into that stream; its
        access key lives in a Secret of the private cloud (rotate: ``pulumi up --replace`` the key)."""
        user = aws.iam.User(self.child_name("onprem-audit"), name=f"{args.name_prefix}-onprem-audit-shipper",
                            tags=self.tags("onprem-audit"), opts=self.child_opts())  # fmt: skip
        aws.iam.UserPolicy(self.child_name("onprem-audit"), user=user.name,
                           policy=audit_stream.arn.apply(lambda arn: json.dumps(firehose.shipper_policy(arn))),
                           opts=self.child_opts())  # fmt: skip
        key = aws.iam.AccessKey(self.child_name("onprem-audit"), user=user.name, opts=self.child_opts())
        namespace = args.config.shipping.namespace
        k8s_opts = pulumi.ResourceOptions(parent=self, provider=args.private_cloud_provider)
        config_text = audit_stream.name.apply(lambda name: shipping.fluent_bit_config(
            region=args.region, stream_name=None, audit_stream_name=name, sizing=sizing))  # fmt: skip
        credentials = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                       "metadata": {"name": shipping.AUDIT_CREDENTIALS_SECRET, "namespace": namespace},
                       "stringData": {"AWS_ACCESS_KEY_ID": key.id, "AWS_SECRET_ACCESS_KEY": key.secret}}  # fmt: skip
        objects = shipping.kubernetes_objects(args.config.shipping, None, config_text, shipping.AUDIT_CREDENTIALS_SECRET)
        namespace_resource = kubernetes.declare(self.child_name("onprem-audit-namespace"), objects[0], k8s_opts)
        after = pulumi.ResourceOptions.merge(k8s_opts, pulumi.ResourceOptions(depends_on=[namespace_resource]))
        for manifest in [credentials, *objects[1:]]:
            kubernetes.declare(self.child_name(f"onprem-audit-{manifest['kind'].lower()}"), manifest, after)

    def _shipper(self, args: TieredStorageArgs, stream: aws.kinesis.FirehoseDeliveryStream,
                 audit_stream: aws.kinesis.FirehoseDeliveryStream, sizing: shipping.HotSizing) -> None:  # fmt: skip
        namespace = args.config.shipping.namespace
        trust = pulumi.Output.all(args.oidc_provider_arn, args.oidc_issuer).apply(
            lambda v: irsa_trust_policy(v[0], v[1], namespace, shipping.SERVICE_ACCOUNT))
        role = aws.iam.Role(self.child_name("shipper"), description="Fluent Bit puts container logs into Firehose",
                            assume_role_policy=trust, tags=self.tags("shipper"), opts=self.child_opts())  # fmt: skip
        aws.iam.RolePolicy(self.child_name("shipper"), role=role.id,
                           policy=pulumi.Output.all(stream.arn, audit_stream.arn).apply(
                               lambda arns: json.dumps(firehose.shipper_policy(*arns))),
                           opts=self.child_opts())  # fmt: skip
        config_text = pulumi.Output.all(stream.name, audit_stream.name).apply(
            lambda names: shipping.fluent_bit_config(region=args.region, stream_name=names[0], audit_stream_name=names[1],
                                                     sizing=sizing))  # fmt: skip
        k8s_opts = pulumi.ResourceOptions(parent=self, provider=args.k8s_provider)
        namespace_resource = None
        for manifest in shipping.kubernetes_objects(args.config.shipping, role.arn, config_text):
            resource = kubernetes.declare(
                self.child_name(f"shipper-{manifest['kind'].lower()}"), manifest,
                k8s_opts if namespace_resource is None else pulumi.ResourceOptions.merge(
                    k8s_opts, pulumi.ResourceOptions(depends_on=[namespace_resource])),
            )  # fmt: skip
            if manifest["kind"] == "Namespace":
                namespace_resource = resource
