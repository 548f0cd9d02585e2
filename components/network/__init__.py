"""Network baseline: VPC, subnets per AZ and tier, NAT, VPC endpoints, flow logs."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

import pulumi
import pulumi_aws as aws

from components.base import PlatformComponent
from components.config import NetworkConfig
from components.network.cidr import SubnetPlan, allocate_subnets
from components.tagging import TagContext

__all__ = ["Network", "NetworkArgs", "SubnetPlan", "allocate_subnets"]

# Load-balancer subnet discovery tags read by the AWS Load Balancer Controller.
_ELB_ROLE_TAG = {"public": "kubernetes.io/role/elb", "private": "kubernetes.io/role/internal-elb"}


@dataclass(frozen=True)
class NetworkArgs:
    config: NetworkConfig
    region: str
    nat_mode: Literal["single", "perAz"]
    alarm_topic_arns: dict[str, pulumi.Input[str]] | None = None  # severity -> alert topic; None: no alarms


class Network(PlatformComponent):
    """``platform:network:Network`` — the VPC every other component builds on.

    Outputs: ``vpc_id``, ``vpc_cidr``, ``private_subnet_ids`` / ``public_subnet_ids``
    (in AZ order), ``subnet_ids_by_az`` (tier → AZ → id), ``private_route_table_ids``
    and ``endpoint_security_group_id``.
    """

    def __init__(
        self,
        name: str,
        args: NetworkArgs,
        tags: TagContext,
        provider: aws.Provider,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        # Validate (and lay out every subnet) before declaring anything.
        config = args.config
        plans = allocate_subnets(
            config.vpc_cidr, config.availability_zones, config.subnet_prefix_lengths(), config.az_slots
        )
        super().__init__("platform:network:Network", name, "network", tags, provider, opts)

        self.vpc = aws.ec2.Vpc(
            self.child_name("vpc"),
            cidr_block=str(config.vpc_cidr),
            enable_dns_hostnames=True,  # interface endpoints' private DNS needs both
            enable_dns_support=True,
            tags=self.tags("vpc"),
            opts=self.child_opts(),
        )
        # Take over the VPC's default security group and leave it with no rules, so
        # nothing lands in an allow-all group by accident (CIS AWS 5.4).
        aws.ec2.DefaultSecurityGroup(
            self.child_name("default-sg"),
            vpc_id=self.vpc.id,
            tags=self.tags("default-sg-unused"),
            opts=self.child_opts(),
        )
        igw = aws.ec2.InternetGateway(
            self.child_name("igw"), vpc_id=self.vpc.id, tags=self.tags("igw"), opts=self.child_opts()
        )

        self.subnets: dict[str, dict[str, aws.ec2.Subnet]] = {"private": {}, "public": {}}
        for plan in plans:
            self.subnets[plan.tier][plan.az] = aws.ec2.Subnet(
                self.child_name(f"{plan.tier}-{plan.az}"),
                vpc_id=self.vpc.id,
                cidr_block=str(plan.cidr),
                availability_zone=plan.az,
                # Public subnets hold load balancers and NAT gateways only: nothing
                # launched there gets a public address unless it asks for one.
                map_public_ip_on_launch=False,
                tags={**self.tags(f"{plan.tier}-{plan.az}"), _ELB_ROLE_TAG[plan.tier]: "1", "tier": plan.tier},
                opts=self.child_opts(),
            )

        public_rt = aws.ec2.RouteTable(
            self.child_name("public-rt"), vpc_id=self.vpc.id, tags=self.tags("public-rt"), opts=self.child_opts()
        )
        aws.ec2.Route(
            self.child_name("public-default"),
            route_table_id=public_rt.id,
            destination_cidr_block="0.0.0.0/0",
            gateway_id=igw.id,
            opts=self.child_opts(),
        )
        for az, subnet in self.subnets["public"].items():
            aws.ec2.RouteTableAssociation(
                self.child_name(f"public-{az}"), subnet_id=subnet.id, route_table_id=public_rt.id,
                opts=self.child_opts(),
            )  # fmt: skip

        azs = list(config.availability_zones)
        nat_azs = azs if args.nat_mode == "perAz" else azs[:1]
        nat_by_az: dict[str, aws.ec2.NatGateway] = {}
        for az in nat_azs:
            eip = aws.ec2.Eip(
                self.child_name(f"nat-{az}"), domain="vpc", tags=self.tags(f"nat-{az}"),
                opts=self.child_opts(depends_on=[igw]),
            )  # fmt: skip
            nat_by_az[az] = aws.ec2.NatGateway(
                self.child_name(f"nat-{az}"),
                allocation_id=eip.id,
                subnet_id=self.subnets["public"][az].id,
                connectivity_type="public",
                tags=self.tags(f"nat-{az}"),
                opts=self.child_opts(depends_on=[igw]),
            )

        from components.alerting.cloudwatch import nat_gateway_alarms

        for az, nat in nat_by_az.items():
            self.metric_alarms(self.stack_prefix, nat_gateway_alarms(az, nat.id),
                               args.alarm_topic_arns)  # fmt: skip

        self.private_route_tables: list[aws.ec2.RouteTable] = []
        for az, subnet in self.subnets["private"].items():
            route_table = aws.ec2.RouteTable(
                self.child_name(f"private-{az}-rt"), vpc_id=self.vpc.id, tags=self.tags(f"private-{az}-rt"),
                opts=self.child_opts(),
            )  # fmt: skip
            nat = nat_by_az.get(az, nat_by_az[nat_azs[0]])
            aws.ec2.Route(
                self.child_name(f"private-{az}-default"),
                route_table_id=route_table.id,
                destination_cidr_block="0.0.0.0/0",
                nat_gateway_id=nat.id,
                opts=self.child_opts(),
            )
            aws.ec2.RouteTableAssociation(
                self.child_name(f"private-{az}"), subnet_id=subnet.id, route_table_id=route_table.id,
                opts=self.child_opts(),
            )  # fmt: skip
            self.private_route_tables.append(route_table)

        # S3 through a gateway endpoint: free, and model/image layers skip NAT charges.
        aws.ec2.VpcEndpoint(
            self.child_name("s3"),
            vpc_id=self.vpc.id,
            service_name=f"com.amazonaws.{args.region}.s3",
            vpc_endpoint_type="Gateway",
            route_table_ids=[rt.id for rt in self.private_route_tables],
            tags=self.tags("s3-endpoint"),
            opts=self.child_opts(),
        )
        self.endpoint_security_group = aws.ec2.SecurityGroup(
            self.child_name("endpoints"),
            vpc_id=self.vpc.id,
            description="HTTPS from inside the VPC to interface VPC endpoints",
            tags=self.tags("endpoints"),
            opts=self.child_opts(),
        )
        aws.vpc.SecurityGroupIngressRule(
            self.child_name("endpoints-https"),
            security_group_id=self.endpoint_security_group.id,
            ip_protocol="tcp",
            from_port=443,
            to_port=443,
            cidr_ipv4=str(config.vpc_cidr),
            description="HTTPS from the VPC",
            tags=self.tags("endpoints-https"),
            opts=self.child_opts(),
        )
        for service in config.interface_endpoints:
            aws.ec2.VpcEndpoint(
                self.child_name(service.replace(".", "-")),
                vpc_id=self.vpc.id,
                service_name=f"com.amazonaws.{args.region}.{service}",
                vpc_endpoint_type="Interface",
                private_dns_enabled=True,
                subnet_ids=[s.id for s in self.subnets["private"].values()],
                security_group_ids=[self.endpoint_security_group.id],
                tags=self.tags(f"{service}-endpoint"),
                opts=self.child_opts(),
            )

        if config.flow_logs.enabled:
            self._flow_logs(config, args.region)

        self.vpc_id = self.vpc.id
        self.vpc_cidr = pulumi.Output.from_input(str(config.vpc_cidr))
        self.private_subnet_ids = pulumi.Output.all(*[s.id for s in self.subnets["private"].values()])
        self.public_subnet_ids = pulumi.Output.all(*[s.id for s in self.subnets["public"].values()])
        self.subnet_ids_by_az = {
            tier: {az: subnet.id for az, subnet in by_az.items()} for tier, by_az in self.subnets.items()
        }
        self.private_route_table_ids = pulumi.Output.all(*[rt.id for rt in self.private_route_tables])
        # One id per AZ, known by count before deployment: other components add routes to each.
        self.private_route_table_id_list = [rt.id for rt in self.private_route_tables]
        self.endpoint_security_group_id = self.endpoint_security_group.id
        self.register_outputs(
            {
                "vpcId": self.vpc_id,
                "vpcCidr": self.vpc_cidr,
                "privateSubnetIds": self.private_subnet_ids,
                "publicSubnetIds": self.public_subnet_ids,
                "subnetIdsByAz": self.subnet_ids_by_az,
                "privateRouteTableIds": self.private_route_table_ids,
                "endpointSecurityGroupId": self.endpoint_security_group_id,
            }
        )

    def _flow_logs(self, config: NetworkConfig, region: str) -> None:
        flow = config.flow_logs
        log_group = aws.cloudwatch.LogGroup(
            self.child_name("flow-logs"),
            retention_in_days=flow.retention_days,
            tags=self.tags("flow-logs"),
            opts=self.child_opts(),
        )
        identity = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=self, provider=self._provider))
        role = aws.iam.Role(
            self.child_name("flow-logs"),
            description="Lets VPC Flow Logs deliver to its CloudWatch log group",
            assume_role_policy=identity.account_id.apply(
                lambda account: flow_logs_trust_policy(account, region)
            ),
            tags=self.tags("flow-logs"),
            opts=self.child_opts(),
        )
        aws.iam.RolePolicy(
            self.child_name("flow-logs"),
            role=role.id,
            policy=log_group.arn.apply(flow_logs_delivery_policy),
            opts=self.child_opts(),
        )
        aws.ec2.FlowLog(
            self.child_name("flow-log"),
            vpc_id=self.vpc.id,
            traffic_type=flow.traffic_type,
            log_destination_type="cloud-watch-logs",
            log_destination=log_group.arn,
            iam_role_arn=role.arn,
            max_aggregation_interval=flow.max_aggregation_interval,
            tags=self.tags("flow-log"),
            opts=self.child_opts(),
        )


def flow_logs_trust_policy(account_id: str, region: str) -> str:
    """Trust for the flow-logs service, scoped to this account's flow logs (confused deputy)."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "vpc-flow-logs.amazonaws.com"},
                    "Action": "sts:AssumeRole",
                    "Condition": {
                        "StringEquals": {"aws:SourceAccount": account_id},
                        "ArnLike": {"aws:SourceArn": f"arn:aws:ec2:{region}:{account_id}:vpc-flow-log/*"},
                    },
                }
            ],
        }
    )


def flow_logs_delivery_policy(log_group_arn: str) -> str:
    """Write access to exactly one log group (and its streams)."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": [
                        "logs:CreateLogStream",
                        "logs:PutLogEvents",
                        "logs:DescribeLogGroups",
                        "logs:DescribeLogStreams",
                    ],
                    "Resource": [log_group_arn, f"{log_group_arn}:*"],
                }
            ],
        }
    )
