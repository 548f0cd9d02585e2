"""GPU capacity: a reserved on-demand base and a spot pool, with interruption handling.

Both GPU groups are self-managed Auto Scaling groups of EKS-optimized accelerated AL2023
nodes. The spot pool needs a MixedInstancesPolicy to get price-capacity-optimized
allocation, which EKS managed node groups cannot set (aws/containers-roadmap#1903);
the reserved group uses the same launch path so both are drained the same way, by the
AWS Node Termination Handler in queue mode. See docs/gpu-capacity.md for the why.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components.base import PlatformComponent
from components.config import GpuConfig, StorageConfig
from components.eks import NODE_POLICIES, SYSTEM_NODE_LABELS, encrypted_root_volume, node_metadata_options
from components.eks.policies import irsa_trust_policy, service_trust_policy
from components.gpu import events, policies, scheduling
from components.gpu.userdata import data_volume, node_user_data
from components.tagging import TagContext

HOURS_PER_MONTH = 730
NTH_NAMESPACE = "kube-system"
NTH_SERVICE_ACCOUNT = "aws-node-termination-handler"
NTH_MANAGED_TAG = "aws-node-termination-handler/managed"
ACCELERATED_AMI_PARAMETER = "/aws/service/eks/optimized-ami/{version}/amazon-linux-2023/x86_64/nvidia/recommended/image_id"


@dataclass(frozen=True)
class CapacityPoolArgs:
    config: GpuConfig
    region: str
    kubernetes_version: str
    reserved_az: str
    private_subnet_ids_by_az: dict[str, pulumi.Input[str]]
    cluster_name: pulumi.Input[str]
    cluster_endpoint: pulumi.Input[str]
    cluster_certificate_authority: pulumi.Input[str]
    cluster_service_cidr: pulumi.Input[str]
    cluster_security_group_id: pulumi.Input[str]
    oidc_provider_arn: pulumi.Input[str]
    oidc_issuer: pulumi.Input[str]
    k8s_provider: k8s.Provider
    storage: StorageConfig = field(default_factory=StorageConfig)  # the hot tier: where the model cache and logs live
    alarm_topic_arns: dict[str, pulumi.Input[str]] | None = None  # severity -> alert topic; None: no alarms
    interruptions_per_hour_alarm: int = 4


def capacity_facts(config: GpuConfig, reserved_az: str, azs: list[str]) -> list[dict]:
    """What cost estimation needs, stated rather than guessed from names."""
    facts = []
    reserved = config.reserved
    if reserved.count:
        facts.append(
            {
                "pool": "gpu-reserved",
                "market": "reserved",
                "instanceTypes": [reserved.instance_type],
                "reservedCount": reserved.count,
                "minSize": reserved.count,
                "desiredSize": reserved.count,
                "maxSize": reserved.group_max_size,
                "availabilityZones": [reserved_az],
                "rootVolumeGib": reserved.root_volume_gib,
                # A capacity reservation bills every hour it exists, used or not.
                "hoursPerMonth": HOURS_PER_MONTH,
            }
        )
    spot = config.spot
    facts.append(
        {
            "pool": "gpu-spot",
            "market": "spot",
            "instanceTypes": list(spot.instance_types),
            "minSize": spot.min_size,
            "desiredSize": spot.desired_size,
            "maxSize": spot.max_size,
            "availabilityZones": list(azs),
            "rootVolumeGib": spot.root_volume_gib,
            "hoursPerMonth": HOURS_PER_MONTH,
        }
    )
    return facts


class CapacityPool(PlatformComponent):
    """``platform:gpu:CapacityPool``.

    Outputs: ``events_topic_arn`` (SNS, for alerting), ``interruption_queue_url``,
    ``reservation_id`` (None without a reserved base), ``scheduling`` (the contract) and
    ``capacity_facts``.
    """

    def __init__(
        self,
        name: str,
        args: CapacityPoolArgs,
        tags: TagContext,
        provider: aws.Provider,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        config = args.config
        if args.reserved_az not in args.private_subnet_ids_by_az:
            raise ValueError(f"reserved GPU AZ {args.reserved_az} has no private subnet")
        super().__init__("platform:gpu:CapacityPool", name, "gpu", tags, provider, opts)
        self._args = args

        instance_profile = self._node_identity()
        ami = aws.ssm.get_parameter_output(
            name=ACCELERATED_AMI_PARAMETER.format(version=args.kubernetes_version),
            opts=pulumi.InvokeOutputOptions(parent=self, provider=provider),
        ).value

        self.reservation_id: pulumi.Output[str] | None = None
        if config.reserved.count:
            reservation = aws.ec2.CapacityReservation(
                self.child_name("reserved"),
                instance_type=config.reserved.instance_type,
                instance_platform="Linux/UNIX",
                availability_zone=args.reserved_az,
                instance_count=config.reserved.count,
                # Only instances that name this reservation use it: spot and system nodes can't eat it.
                instance_match_criteria="targeted",
                end_date_type="limited" if config.reserved.end_date else "unlimited",
                end_date=config.reserved.end_date,
                ebs_optimized=True,
                tags=self.tags("reserved"),
                opts=self.child_opts(),
            )
            self.reservation_id = reservation.id
            template = self._launch_template(
                "reserved",
                ami,
                instance_profile,
                config.reserved.root_volume_gib,
                instance_type=config.reserved.instance_type,
                capacity_reservation_id=reservation.id,
            )
            self._group(
                "reserved",
                template,
                subnet_ids=[args.private_subnet_ids_by_az[args.reserved_az]],
                sizes=(config.reserved.count, config.reserved.count, config.reserved.group_max_size),
            )

        spot_template = self._launch_template("spot", ami, instance_profile, config.spot.root_volume_gib)
        self._group(
            "spot",
            spot_template,
            subnet_ids=list(args.private_subnet_ids_by_az.values()),
            sizes=(config.spot.min_size, config.spot.desired_size, config.spot.max_size),
            spot_instance_types=list(config.spot.instance_types),
        )

        self.events_topic, self.interruption_queue = self._interruption_events()
        self._node_termination_handler()
        self._device_plugin()

        from components.alerting.cloudwatch import spot_interruption_alarms, spot_interruption_signals

        self.metric_alarms(self.stack_prefix,
                           spot_interruption_alarms(self.interruption_queue.name, args.interruptions_per_hour_alarm),
                           args.alarm_topic_arns)  # fmt: skip
        # The same count in Prometheus (Monitoring's CloudWatch exporter): alert and capacity panel.
        self.signals = spot_interruption_signals(self.stack_prefix, self.interruption_queue.name,
                                                 args.interruptions_per_hour_alarm)  # fmt: skip
        self.events_topic_arn = self.events_topic.arn
        self.interruption_queue_url = self.interruption_queue.url
        self.scheduling = scheduling.contract(config.reserved.count)
        self.capacity_facts = capacity_facts(config, args.reserved_az, list(args.private_subnet_ids_by_az))
        self.register_outputs(
            {
                "eventsTopicArn": self.events_topic_arn,
                "interruptionQueueUrl": self.interruption_queue_url,
                "reservationId": self.reservation_id,
                "scheduling": self.scheduling,
                "capacityFacts": self.capacity_facts,
            }
        )

    # -- nodes ------------------------------------------------------------------------

    def _node_identity(self) -> aws.iam.InstanceProfile:
        role = aws.iam.Role(
            self.child_name("nodes"),
            assume_role_policy=service_trust_policy("ec2.amazonaws.com"),
            tags=self.tags("nodes"),
            opts=self.child_opts(),
        )
        for arn in NODE_POLICIES:
            aws.iam.RolePolicyAttachment(
                self.child_name(f"nodes-{arn.rsplit('/', 1)[-1]}"), role=role.name, policy_arn=arn,
                opts=self.child_opts(),
            )  # fmt: skip
        profile = aws.iam.InstanceProfile(
            self.child_name("nodes"), role=role.name, tags=self.tags("nodes"), opts=self.child_opts()
        )
        # Self-managed nodes join through an EC2_LINUX access entry (no aws-auth ConfigMap).
        aws.eks.AccessEntry(
            self.child_name("nodes"),
            cluster_name=self._args.cluster_name,
            principal_arn=role.arn,
            type="EC2_LINUX",
            tags=self.tags("nodes"),
            opts=self.child_opts(),
        )
        return profile

    def _launch_template(
        self,
        market: scheduling.Market,
        ami: pulumi.Input[str],
        instance_profile: aws.iam.InstanceProfile,
        root_volume_gib: int,
        instance_type: str | None = None,
        capacity_reservation_id: pulumi.Input[str] | None = None,
    ) -> aws.ec2.LaunchTemplate:
        from components.storage.shipping import hot_sizing, kubelet_log_rotation  # storage imports gpu.scheduling

        args = self._args
        hot = args.storage.hot
        kubelet_config = kubelet_log_rotation(hot_sizing(hot, args.storage.shipping))
        user_data = pulumi.Output.all(
            args.cluster_name, args.cluster_endpoint, args.cluster_certificate_authority, args.cluster_service_cidr
        ).apply(
            lambda v: base64.b64encode(
                node_user_data(v[0], v[1], v[2], v[3], scheduling.node_labels(market), [scheduling.GPU_TAINT],
                               hot_source=hot.source, kubelet_config=kubelet_config).encode()
            ).decode()
        )
        disks = [encrypted_root_volume(root_volume_gib)]
        if hot.source == "ebs":
            disks.append(data_volume(hot.size_gib, hot.throughput_mibps, hot.iops))
        return aws.ec2.LaunchTemplate(
            self.child_name(market),
            description=f"EKS accelerated GPU nodes ({market}): IMDSv2, encrypted gp3 root, {hot.source} hot tier",
            image_id=ami,
            instance_type=instance_type,
            iam_instance_profile={"arn": instance_profile.arn},
            vpc_security_group_ids=[args.cluster_security_group_id],
            metadata_options=node_metadata_options(),
            block_device_mappings=disks,
            capacity_reservation_specification=(
                {"capacity_reservation_target": {"capacity_reservation_id": capacity_reservation_id}}
                if capacity_reservation_id is not None
                else None
            ),
            monitoring={"enabled": True},
            user_data=user_data,
            tag_specifications=[
                {"resource_type": kind, "tags": self.tags(f"{market}-node")} for kind in ("instance", "volume")
            ],
            update_default_version=True,
            tags=self.tags(market),
            opts=self.child_opts(),
        )

    def _group(
        self,
        market: scheduling.Market,
        template: aws.ec2.LaunchTemplate,
        subnet_ids: list[pulumi.Input[str]],
        sizes: tuple[int, int, int],
        spot_instance_types: list[str] | None = None,
    ) -> aws.autoscaling.Group:
        min_size, desired, max_size = sizes
        template_ref = {"id": template.id, "version": template.latest_version.apply(str)}
        tags = {
            **self.tags(f"{market}-nodes"),
            NTH_MANAGED_TAG: "true",
            "k8s.io/cluster-autoscaler/enabled": "true",
            **{f"k8s.io/cluster-autoscaler/node-template/label/{k}": v for k, v in scheduling.node_labels(market).items()},
            "k8s.io/cluster-autoscaler/node-template/taint/nvidia.com/gpu": "true:NoSchedule",
        }
        group_args: dict = {}
        if spot_instance_types is not None:
            group_args["mixed_instances_policy"] = {
                "instances_distribution": {
                    "on_demand_base_capacity": 0,
                    "on_demand_percentage_above_base_capacity": 0,
                    "spot_allocation_strategy": "price-capacity-optimized",
                },
                "launch_template": {
                    "launch_template_specification": {
                        "launch_template_id": template.id,
                        "version": template.latest_version.apply(str),
                    },
                    "overrides": [{"instance_type": t} for t in spot_instance_types],
                },
            }
            group_args["capacity_rebalance"] = True
        else:
            group_args["launch_template"] = template_ref
        return aws.autoscaling.Group(
            self.child_name(market),
            min_size=min_size,
            desired_capacity=desired,
            max_size=max_size,
            vpc_zone_identifiers=subnet_ids,
            health_check_type="EC2",
            # Replace nodes when the launch template changes (new AMI, new user data). Below
            # 100 % healthy, a full reservation can still refresh: terminate, then launch.
            instance_refresh={"strategy": "Rolling", "preferences": {"min_healthy_percentage": 50}},
            # A termination waits for the Node Termination Handler to drain the node.
            initial_lifecycle_hooks=[
                {
                    "name": "drain-before-terminate",
                    "lifecycle_transition": "autoscaling:EC2_INSTANCE_TERMINATING",
                    "heartbeat_timeout": 300,
                    "default_result": "CONTINUE",
                }
            ],
            tags=[{"key": k, "value": v, "propagate_at_launch": True} for k, v in tags.items()],
            # The cluster autoscaler owns the desired size after creation.
            opts=self.child_opts(ignore_changes=["desiredCapacity"]),
            **group_args,
        )

    # -- interruptions ------------------------------------------------------------------

    def _interruption_events(self) -> tuple[aws.sns.Topic, aws.sqs.Queue]:
        identity = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=self, provider=self._provider))
        topic_key = aws.kms.Key(
            self.child_name("events"),
            description="Encrypts the GPU capacity events topic (EventBridge may publish)",
            enable_key_rotation=True,
            policy=identity.account_id.apply(policies.topic_key_policy),
            tags=self.tags("events"),
            opts=self.child_opts(),
        )
        topic = aws.sns.Topic(
            self.child_name("events"),
            kms_master_key_id=topic_key.arn,
            tags=self.tags("events"),
            opts=self.child_opts(),
        )
        queue = aws.sqs.Queue(
            self.child_name("interruptions"),
            message_retention_seconds=300,  # a notice older than the 2-minute warning is useless
            sqs_managed_sse_enabled=True,
            tags=self.tags("interruptions"),
            opts=self.child_opts(),
        )
        queue_rules: list[pulumi.Output[str]] = []
        topic_rules: list[pulumi.Output[str]] = []
        for rule in events.RULES:
            event_rule = aws.cloudwatch.EventRule(
                self.child_name(rule.name),
                description=rule.description,
                event_pattern=pulumi.Output.json_dumps(rule.pattern),
                tags=self.tags(rule.name),
                opts=self.child_opts(),
            )
            destinations = (("queue", rule.to_queue, queue.arn, queue_rules), ("topic", rule.to_topic, topic.arn, topic_rules))
            for suffix, wanted, arn, senders in destinations:
                if wanted:
                    aws.cloudwatch.EventTarget(
                        self.child_name(f"{rule.name}-{suffix}"), rule=event_rule.name, arn=arn, opts=self.child_opts()
                    )
                    senders.append(event_rule.arn)
        aws.sqs.QueuePolicy(
            self.child_name("interruptions"),
            queue_url=queue.url,
            policy=pulumi.Output.all(queue.arn, *queue_rules).apply(
                lambda v: policies.events_to_queue_policy(v[0], v[1:])
            ),
            opts=self.child_opts(),
        )
        aws.sns.TopicPolicy(
            self.child_name("events"),
            arn=topic.arn,
            policy=pulumi.Output.all(topic.arn, *topic_rules).apply(
                lambda v: policies.events_to_topic_policy(v[0], v[1:])
            ),
            opts=self.child_opts(),
        )
        return topic, queue

    def _node_termination_handler(self) -> None:
        args = self._args
        role = aws.iam.Role(
            self.child_name("nth"),
            description="AWS Node Termination Handler (IRSA): reads the interruption queue",
            assume_role_policy=pulumi.Output.all(args.oidc_provider_arn, args.oidc_issuer).apply(
                lambda v: irsa_trust_policy(v[0], v[1], NTH_NAMESPACE, NTH_SERVICE_ACCOUNT)
            ),
            tags=self.tags("nth"),
            opts=self.child_opts(),
        )
        aws.iam.RolePolicy(
            self.child_name("nth"),
            role=role.id,
            policy=self.interruption_queue.arn.apply(policies.node_termination_handler_policy),
            opts=self.child_opts(),
        )
        k8s.helm.v3.Release(
            self.child_name("nth"),
            name="aws-node-termination-handler",
            chart="aws-node-termination-handler",
            version=args.config.node_termination_handler_chart,
            repository_opts={"repo": "https://aws.github.io/eks-charts"},
            namespace=NTH_NAMESPACE,
            values={
                "enableSqsTerminationDraining": True,  # queue mode
                "queueURL": self.interruption_queue.url,
                "awsRegion": args.region,
                "checkASGTagBeforeDraining": True,
                "managedTag": NTH_MANAGED_TAG,
                "deleteSqsMsgIfNodeNotFound": True,
                "serviceAccount": {
                    "create": True,
                    "name": NTH_SERVICE_ACCOUNT,
                    "annotations": {"eks.amazonaws.com/role-arn": role.arn},
                },
                "nodeSelector": SYSTEM_NODE_LABELS,
            },
            opts=pulumi.ResourceOptions(parent=self, provider=args.k8s_provider),
        )

    # -- device plugin ------------------------------------------------------------------

    def _device_plugin(self) -> None:
        k8s.apps.v1.DaemonSet(
            self.child_name("nvidia-device-plugin"),
            metadata={"name": "nvidia-device-plugin", "namespace": "kube-system"},
            spec=device_plugin_spec(self._args.config.device_plugin_image),
            opts=pulumi.ResourceOptions(parent=self, provider=self._args.k8s_provider),
        )


def device_plugin_spec(image: str) -> dict:
    """The NVIDIA device plugin DaemonSet spec: on GPU nodes only, tolerating their taint."""
    labels = {"app.kubernetes.io/name": "nvidia-device-plugin"}
    return {
        "selector": {"matchLabels": labels},
        "updateStrategy": {"type": "RollingUpdate"},
        "template": {
            "metadata": {"labels": labels},
            "spec": {
                "priorityClassName": "system-node-critical",
                "nodeSelector": {scheduling.GPU_NODE_LABEL: "true"},
                "tolerations": [scheduling.gpu_toleration(), {"key": "CriticalAddonsOnly", "operator": "Exists"}],
                "containers": [
                    {
                        "name": "nvidia-device-plugin",
                        "image": image,
                        "env": [{"name": "FAIL_ON_INIT_ERROR", "value": "false"}],
                        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
                        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                        "volumeMounts": [{"name": "device-plugin", "mountPath": "/var/lib/kubelet/device-plugins"}],
                    }
                ],
                "volumes": [{"name": "device-plugin", "hostPath": {"path": "/var/lib/kubelet/device-plugins"}}],
            },
        },
    }
