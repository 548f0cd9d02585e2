"""``platform:failover:Pair`` — a Keepalived pair protecting Redis, with a VIP that moves on failover."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from components.alerting.cloudwatch import instance_status_alarms
from components.base import PlatformComponent
from components.config import FailoverConfig, NetworkConfig
from components.eks.policies import service_trust_policy
from components.failover import policies
from components.failover.render import NODES, agent_settings, aws_layout, cloud_init, compressed_user_data
from components.tagging import TagContext

VRRP_PROTOCOL = "112"
USER_DATA_LIMIT = 16384  # EC2's limit on (base64-decoded) user data


@dataclass(frozen=True)
class FailoverPairArgs:
    config: FailoverConfig
    network: NetworkConfig
    pair_name: str  # keepalived instance, metric dimension, alarm prefix
    region: str
    vpc_id: pulumi.Input[str]
    vpc_cidr: str
    subnet_ids_by_az: dict[str, dict[str, pulumi.Output[str]]]  # tier -> AZ -> subnet id
    alarm_topic_arns: dict[str, pulumi.Input[str]]  # severity -> topic (components/alerting)
    # The audit stream (components/storage): each node puts its failover.transition events there.
    audit_stream_name: pulumi.Input[str] | None = None
    audit_stream_arn: pulumi.Input[str] | None = None


class FailoverPair(PlatformComponent):
    """Two EC2 nodes running keepalived and Redis; the VIP always points at the writable primary.

    Node addresses are fixed from the subnet layout (``hostOffset``), so keepalived's
    unicast peers, the security group and ``platformctl failover render`` are known
    before anything exists. Pulumi never manages the VIP's placement: the nodes' agents
    do (a Pulumi-managed association would move it back on every ``pulumi up``).

    Outputs: ``endpoint`` (the address clients use), ``node_addresses``,
    ``password_parameter`` (SSM SecureString name), ``alarm_names``; ``signals`` (the same
    series, alerts and a dashboard in Prometheus, through Monitoring's CloudWatch exporter).
    """

    def __init__(self, name: str, args: FailoverPairArgs, tags: TagContext, provider: aws.Provider,
                 opts: pulumi.ResourceOptions | None = None) -> None:  # fmt: skip
        config = args.config
        layout = aws_layout(config, args.network)  # validates placement before anything is declared
        super().__init__("platform:failover:Pair", name, "failover", tags, provider, opts)
        tier = "public" if config.vip_mode == "elasticIp" else "private"
        identity = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=self, provider=provider))

        group = aws.ec2.SecurityGroup(self.child_name("nodes"), vpc_id=args.vpc_id,
                                      description=f"Failover pair {args.pair_name}: VRRP and Redis",
                                      tags=self.tags("nodes"), opts=self.child_opts())  # fmt: skip
        self._rules(group, config, args.vpc_cidr)

        password = random.RandomPassword(self.child_name("redis"), length=40, special=False,
                                         opts=pulumi.ResourceOptions(parent=self))  # fmt: skip
        parameter = aws.ssm.Parameter(self.child_name("redis-password"), type="SecureString", value=password.result,
                                      name=f"/platform/{args.pair_name}/redis-password",
                                      description=f"Redis AUTH password of the {args.pair_name} pair (read at boot)",
                                      tags=self.tags("redis-password"), opts=self.child_opts())  # fmt: skip
        elastic_ip = None
        if config.vip_mode == "elasticIp":
            elastic_ip = aws.ec2.Eip(self.child_name("vip"), domain="vpc", tags=self.tags("vip"), opts=self.child_opts())

        interfaces: dict[str, aws.ec2.NetworkInterface] = {}
        for node in NODES:
            interfaces[node] = aws.ec2.NetworkInterface(
                self.child_name(f"{node}"), subnet_id=args.subnet_ids_by_az[tier][layout.azs[node]],
                private_ips=[str(layout.addresses[node])], security_groups=[group.id],
                description=f"{args.pair_name} node {node}", tags=self.tags(node),
                # The agent adds and removes the VIP as a secondary address: not drift.
                opts=self.child_opts(ignore_changes=["privateIps", "privateIpsCount", "privateIpList"]),
            )  # fmt: skip
        self.alarm_names: list[pulumi.Output[str]] = []
        for node in NODES:
            self._node(node, config, args, layout, interfaces[node], elastic_ip, parameter, identity)
        self._alarms(config, args)
        self.signals = policies.exported_signals(args.pair_name, config.redis.lag_alarm_seconds)  # for Monitoring

        self.endpoint: pulumi.Output[str] = (elastic_ip.public_ip if elastic_ip is not None
                                             else pulumi.Output.from_input(str(layout.vip.ip)))  # fmt: skip
        self.node_addresses = {node: str(layout.addresses[node]) for node in NODES}
        self.password_parameter = parameter.name
        self.register_outputs({"endpoint": self.endpoint, "node_addresses": self.node_addresses,
                               "password_parameter": parameter.name})  # fmt: skip

    def _rules(self, group: aws.ec2.SecurityGroup, config: FailoverConfig, vpc_cidr: str) -> None:
        port = config.redis.port
        peer_rules: list[tuple[str, str, int | None, str]] = [
            ("vrrp", VRRP_PROTOCOL, None, "VRRP adverts between the two nodes only"),
            ("redis-peer", "tcp", port, "Replication between the nodes, and health checks of the peer"),
        ]
        for suffix, protocol, rule_port, description in peer_rules:
            ports = {"from_port": rule_port, "to_port": rule_port} if rule_port else {}
            aws.vpc.SecurityGroupIngressRule(self.child_name(f"in-{suffix}"), security_group_id=group.id,
                                             referenced_security_group_id=group.id, ip_protocol=protocol,
                                             description=description, **ports, tags=self.tags(f"in-{suffix}"),
                                             opts=self.child_opts())  # fmt: skip
            aws.vpc.SecurityGroupEgressRule(self.child_name(f"out-{suffix}"), security_group_id=group.id,
                                            referenced_security_group_id=group.id, ip_protocol=protocol,
                                            description=description, **ports, tags=self.tags(f"out-{suffix}"),
                                            opts=self.child_opts())  # fmt: skip
        for index, cidr in enumerate(config.client_cidrs or [vpc_cidr]):
            aws.vpc.SecurityGroupIngressRule(self.child_name(f"in-clients-{index}"), security_group_id=group.id,
                                             cidr_ipv4=str(cidr), ip_protocol="tcp", from_port=port, to_port=port,
                                             description="Redis clients", tags=self.tags("in-clients"),
                                             opts=self.child_opts())  # fmt: skip
        # HTTPS out: EC2, SSM, CloudWatch and STS APIs (or their VPC endpoints), and the package repositories.
        aws.vpc.SecurityGroupEgressRule(self.child_name("out-https"), security_group_id=group.id,
                                        cidr_ipv4="0.0.0.0/0", ip_protocol="tcp", from_port=443, to_port=443,
                                        description="AWS APIs and package repositories", tags=self.tags("out-https"),
                                        opts=self.child_opts())  # fmt: skip
        for protocol in ("udp", "tcp"):
            aws.vpc.SecurityGroupEgressRule(self.child_name(f"out-dns-{protocol}"), security_group_id=group.id,
                                            cidr_ipv4=vpc_cidr, ip_protocol=protocol, from_port=53, to_port=53,
                                            description="VPC resolver", tags=self.tags("out-dns"),
                                            opts=self.child_opts())  # fmt: skip

    def _node(self, node: str, config: FailoverConfig, args: FailoverPairArgs, layout, interface: aws.ec2.NetworkInterface,
              elastic_ip: aws.ec2.Eip | None, parameter: aws.ssm.Parameter, identity: Any) -> None:  # fmt: skip
        role = aws.iam.Role(self.child_name(node), description=f"{args.pair_name} node {node}: VIP, password, metrics, audit",
                            assume_role_policy=service_trust_policy("ec2.amazonaws.com"), tags=self.tags(node),
                            opts=self.child_opts())  # fmt: skip
        aws.iam.RolePolicyAttachment(self.child_name(f"{node}-ssm"), role=role.name,
                                     policy_arn="arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore",
                                     opts=self.child_opts())  # fmt: skip
        allocation = elastic_ip.allocation_id if elastic_ip is not None else None
        aws.iam.RolePolicy(
            self.child_name(node), role=role.id,
            policy=pulumi.Output.all(identity.account_id, interface.id, allocation, parameter.arn, args.audit_stream_arn).apply(
                lambda v: policies.node_role_policy(mode=config.vip_mode, region=args.region, account_id=v[0],
                                                    network_interface_id=v[1], allocation_id=v[2],
                                                    password_parameter_arn=v[3], audit_stream_arn=v[4])),
            opts=self.child_opts(),
        )  # fmt: skip
        profile = aws.iam.InstanceProfile(self.child_name(node), role=role.name, tags=self.tags(node),
                                          opts=self.child_opts())  # fmt: skip

        def user_data(values: list[Any]) -> str:
            eni_id, allocation_id, parameter_name, audit_stream = values
            settings = agent_settings(layout, node, config, args.pair_name, region=args.region, network_interface_id=eni_id,
                                      allocation_id=allocation_id, audit_stream=audit_stream)  # fmt: skip
            packed = compressed_user_data(cloud_init(layout, node, config, args.pair_name, settings, parameter_name,
                                                     args.region))  # fmt: skip
            if len(packed) * 3 // 4 > USER_DATA_LIMIT:
                raise ValueError(f"failover node {node}: user data is {len(packed) * 3 // 4} bytes, over EC2's 16 KiB")
            return packed

        template = aws.ec2.LaunchTemplate(
            self.child_name(node),
            image_id=config.ami, instance_type=config.instance_type, iam_instance_profile={"arn": profile.arn},
            user_data=pulumi.Output.all(interface.id, allocation, parameter.name, args.audit_stream_name).apply(user_data),
            metadata_options={"http_tokens": "required", "http_put_response_hop_limit": 1, "http_endpoint": "enabled"},
            block_device_mappings=[{"device_name": "/dev/xvda", "ebs": {
                "volume_size": config.root_volume_gb, "volume_type": "gp3", "encrypted": "true",
                "delete_on_termination": "true"}}],
            network_interfaces=[{"device_index": 0, "network_interface_id": interface.id}],
            monitoring={"enabled": True},
            tag_specifications=[{"resource_type": kind, "tags": self.tags(node)} for kind in ("instance", "volume")],
            tags=self.tags(node), opts=self.child_opts(),
        )  # fmt: skip
        instance = aws.ec2.Instance(
            self.child_name(node), launch_template={"id": template.id, "version": template.latest_version.apply(str)},
            maintenance_options={"auto_recovery": "default"}, tags=self.tags(node),
            # A new template version (user data, AMI) must not replace both nodes at once:
            # roll them one at a time (docs/failover.md, "Changing the nodes").
            opts=self.child_opts(ignore_changes=["launchTemplate"]),
        )  # fmt: skip
        self.metric_alarms(args.pair_name, instance_status_alarms(node, instance.id), args.alarm_topic_arns)

    def _alarms(self, config: FailoverConfig, args: FailoverPairArgs) -> None:
        for spec in policies.alarm_specs(config.redis.lag_alarm_seconds):
            alarm = aws.cloudwatch.MetricAlarm(
                self.child_name(spec.name), name=f"{args.pair_name}-{spec.name}",
                alarm_description=f"[{spec.severity}] {spec.description}",
                comparison_operator=spec.comparison, threshold=spec.threshold,
                evaluation_periods=spec.evaluation_periods, datapoints_to_alarm=spec.evaluation_periods,
                treat_missing_data=spec.treat_missing_data,
                metric_queries=policies.alarm_metric_queries(spec, args.pair_name),
                alarm_actions=[args.alarm_topic_arns[spec.severity]], ok_actions=[args.alarm_topic_arns[spec.severity]],
                tags={**self.tags(spec.name), "severity": spec.severity}, opts=self.child_opts(),
            )  # fmt: skip
            self.alarm_names.append(alarm.name)

