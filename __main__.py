"""The GPU inference platform: loads the stack's config, then composes components.

Decisions live in the components and their pure functions; environments differ by
stack config only (stacks/Pulumi.<stack>.yaml).
"""

from pathlib import Path

import pulumi
import pulumi_aws as aws

from components.alerting import AlertTopic, AlertTopicArgs
from components.alerting.monitoring import Monitoring, MonitoringArgs
from components.config import load_platform_config
from components.cost.component import CostGuardrails, CostGuardrailsArgs
from components.eks import EksCluster, EksClusterArgs
from components.failover.component import FailoverPair, FailoverPairArgs
from components.gpu import CapacityPool, CapacityPoolArgs
from components.inference import deploy_models, private_cloud_provider
from components.ingress import expose_models
from components.mirror.component import ModelMirror, ModelMirrorArgs
from components.network import Network, NetworkArgs
from components.storage.component import TieredStorage, TieredStorageArgs
from components.tagging import TagContext, resource_name
from components.vpn.component import SiteToSiteVpn, SiteToSiteVpnArgs

# Validated before any resource is declared: a bad stack file stops here.
config = load_platform_config()

tags = TagContext(project=pulumi.get_project(), stack=pulumi.get_stack(), environment=config.environment,
                  cost_center=config.tags.cost_center, owner=config.tags.owner, extra=config.tags.extra)
name_prefix = f"{tags.project}-{config.environment}"
aws_provider = aws.Provider("aws", region=config.aws.region, allowed_account_ids=config.aws.allowed_account_ids or None)
placement = {"tags": tags, "provider": aws_provider}

alerting = AlertTopic("alerting", AlertTopicArgs(config=config.alerting), **placement)
network = Network("network", NetworkArgs(config=config.network, region=config.aws.region, nat_mode=config.nat_gateway_mode,
                                         alarm_topic_arns=alerting.topic_arns), **placement)  # fmt: skip
cluster = EksCluster(
    "eks",
    EksClusterArgs(config=config.eks, cluster_name=resource_name(tags.project, config.environment, "eks"),
                   region=config.aws.region, private_subnet_ids=network.private_subnet_ids),  # fmt: skip
    **placement,
)
gpu = CapacityPool(
    "gpu",
    CapacityPoolArgs(
        config=config.gpu,
        region=config.aws.region,
        kubernetes_version=config.eks.version,
        reserved_az=config.reserved_gpu_az,
        private_subnet_ids_by_az=network.subnet_ids_by_az["private"],
        cluster_name=cluster.cluster_name, cluster_endpoint=cluster.endpoint,
        cluster_certificate_authority=cluster.certificate_authority,
        cluster_service_cidr=cluster.service_cidr,
        cluster_security_group_id=cluster.cluster_security_group_id,
        oidc_provider_arn=cluster.oidc_provider_arn,
        oidc_issuer=cluster.oidc_issuer,
        k8s_provider=cluster.k8s_provider,
        storage=config.storage,  # the hot tier: GPU nodes' local disks
        alarm_topic_arns=alerting.topic_arns, interruptions_per_hour_alarm=config.alerting.thresholds.spot_interruptions_per_hour,
    ),
    **placement,
)
private_cloud = private_cloud_provider(config)
storage = TieredStorage(
    "storage",
    TieredStorageArgs(config=config.storage, name_prefix=name_prefix, region=config.aws.region,
                      k8s_provider=cluster.k8s_provider, oidc_provider_arn=cluster.oidc_provider_arn,
                      oidc_issuer=cluster.oidc_issuer, alarm_topic_arns=alerting.topic_arns,
                      private_cloud_provider=private_cloud),  # fmt: skip
    **placement,
)
failover = vpn = None  # their CloudWatch signals go to Prometheus too (Monitoring)
if config.failover is not None:
    failover = FailoverPair(
        "failover",
        FailoverPairArgs(config=config.failover, network=config.network, region=config.aws.region,
                         pair_name=resource_name(tags.project, config.environment, "session-store"),
                         vpc_id=network.vpc_id, vpc_cidr=str(config.network.vpc_cidr),
                         subnet_ids_by_az=network.subnet_ids_by_az, alarm_topic_arns=alerting.topic_arns,
                         audit_stream_name=storage.audit_stream_name, audit_stream_arn=storage.audit_stream_arn),  # fmt: skip
        **placement,
    )
    pulumi.export("sessionStore", {"endpoint": failover.endpoint, "nodes": failover.node_addresses,
                                   "passwordParameter": failover.password_parameter})  # fmt: skip
if config.vpn is not None:
    vpn = SiteToSiteVpn(
        "vpn",
        SiteToSiteVpnArgs(config=config.vpn, name_prefix=name_prefix, vpc_id=network.vpc_id,
                          private_subnet_ids=list(network.subnet_ids_by_az["private"].values()),
                          private_route_table_ids=network.private_route_table_id_list, vpc_cidr=str(config.network.vpc_cidr),
                          alarm_topic_arns=alerting.topic_arns, cluster_security_group_id=cluster.cluster_security_group_id,
                          endpoint_security_group_id=network.endpoint_security_group_id),  # fmt: skip
        **placement,
    )
    # `platformctl vpn onprem-config` renders the on-prem gateway from these two.
    pulumi.export("vpn", {"connectionId": vpn.connection_id, "transitGatewayId": vpn.transit_gateway_id,
                          "tunnels": vpn.tunnels, "resolverInboundAddresses": vpn.resolver_inbound_addresses})  # fmt: skip
    pulumi.export("vpnPreSharedKeys", vpn.pre_shared_keys)
monitoring = Monitoring(
    "monitoring",
    MonitoringArgs(config=config.alerting, namespace=config.inference.prometheus_namespace, region=config.aws.region,
                   k8s_provider=cluster.k8s_provider, oidc_provider_arn=cluster.oidc_provider_arn,
                   oidc_issuer=cluster.oidc_issuer, topic_arns=alerting.topic_arns, topic_key_arn=alerting.key_arn,
                   signals=[c.signals for c in (gpu, failover, vpn) if c is not None]),  # fmt: skip
    **placement,
)

root = Path(__file__).resolve().parent
k8s_targets = {"eks_provider": cluster.k8s_provider, "oidc_provider_arn": cluster.oidc_provider_arn,
               "oidc_issuer": cluster.oidc_issuer}  # fmt: skip
mirror = None
if config.mirror is not None:
    bucket_name = resource_name(tags.project, config.environment, "model-mirror")
    mirror = ModelMirror(
        "mirror",
        ModelMirrorArgs(config=config.mirror, bucket_name=bucket_name, project_root=root, private_cloud_provider=private_cloud,
                        alarm_topic_arns=alerting.topic_arns, region=config.aws.region, **k8s_targets,
                        onprem_signing_key=config.mirror_signing_key.get_secret_value() if config.mirror_signing_key else None),  # fmt: skip
        **placement,
    )
    pulumi.export("modelMirrorUrl", mirror.public_url)
    pulumi.export("modelMirrorSigningKeyArn", mirror.signing_key_arn)  # its public key verifies the manifests
image, serving = deploy_models(config, tags=tags, provider=aws_provider, project_root=root, private_cloud_provider=private_cloud,
                               eks_crds=monitoring.stack_release, **k8s_targets,
                               mirror_public_key=mirror.signing_public_key if mirror is not None else None)  # fmt: skip
pulumi.export("modelEndpoints", expose_models(config, serving, image.version, tags, aws_provider, cluster, network.vpc_id,
                                             storage.access_log_bucket.bucket, private_cloud))  # fmt: skip
if config.cost is not None:
    cost = CostGuardrails(
        "cost",
        CostGuardrailsArgs(config=config.cost, environment=config.environment, region=config.aws.region, name_prefix=name_prefix,
                           alert_thresholds=config.alerting.budget_thresholds, alert_topic_arns=alerting.topic_arns),  # fmt: skip
        **placement,
    )
    pulumi.export("costLedgerBucket", cost.ledger_bucket.bucket)

pulumi.export("storage", {"buckets": storage.bucket_names, "logStream": storage.stream_name,
                          "auditStream": storage.audit_stream_name, "auditWorkgroup": storage.audit_workgroup})
pulumi.export("alertTopicArns", alerting.topic_arns)
pulumi.export("vpcId", network.vpc_id)
pulumi.export("privateSubnetIds", network.private_subnet_ids)
pulumi.export("publicSubnetIds", network.public_subnet_ids)
pulumi.export("clusterName", cluster.cluster_name)
pulumi.export("gpuEventsTopicArn", gpu.events_topic_arn)
pulumi.export("gpuScheduling", gpu.scheduling)
pulumi.export("inferenceImage", {"version": image.version, "refs": image.refs})
pulumi.export("modelDeployments", {name: component.deployments for name, component in serving.items()})
