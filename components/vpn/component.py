"""``platform:vpn:SiteToSite`` — the private cloud joined to the VPC by two IKEv2 tunnels (docs/vpn.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from components.base import PlatformComponent
from components.config import IkeConfig, VpnConfig
from components.inference.manifests import SERVER_PORT
from components.tagging import TagContext
from components.vpn import alarms
from components.vpn.tunnels import inside_addresses

TUNNELS = (1, 2)
DNS_PORT = 53


@dataclass(frozen=True)
class SiteToSiteVpnArgs:
    config: VpnConfig
    name_prefix: str  # <project>-<environment>: log group, alarm and prefix-list names
    vpc_id: pulumi.Input[str]
    private_subnet_ids: list[pulumi.Input[str]]  # one per AZ: the transit gateway attachment, resolver endpoints
    private_route_table_ids: list[pulumi.Input[str]]  # one per AZ: routes to the private cloud
    vpc_cidr: str
    alarm_topic_arns: dict[str, pulumi.Input[str]]  # severity -> topic (components/alerting)
    # What the private cloud may reach (config.access): the model servers' port on the EKS
    # cluster security group, and HTTPS on the interface endpoints' security group.
    cluster_security_group_id: pulumi.Input[str]
    endpoint_security_group_id: pulumi.Input[str]
    inference_port: int = SERVER_PORT


def tunnel_options(ike: IkeConfig, tunnel: int, inside_cidr: str, pre_shared_key: pulumi.Input[str],
                   log_group_arn: pulumi.Input[str], bgp_logs: bool) -> dict[str, Any]:  # fmt: skip
    """Every tunnel option set explicitly (nothing left to AWS's permissive defaults)."""
    prefix = f"tunnel{tunnel}_"
    cloudwatch: dict[str, Any] = {"log_enabled": True, "log_group_arn": log_group_arn, "log_output_format": "json"}
    if bgp_logs:
        cloudwatch |= {"bgp_log_enabled": True, "bgp_log_group_arn": log_group_arn, "bgp_log_output_format": "json"}
    options: dict[str, Any] = {
        "inside_cidr": inside_cidr,
        "preshared_key": pre_shared_key,
        "ike_versions": ["ikev2"],
        "phase1_encryption_algorithms": list(ike.phase1_encryption),
        "phase1_integrity_algorithms": list(ike.phase1_integrity),
        "phase1_dh_group_numbers": list(ike.phase1_dh_groups),
        "phase1_lifetime_seconds": ike.phase1_lifetime_seconds,
        "phase2_encryption_algorithms": list(ike.phase2_encryption),
        "phase2_integrity_algorithms": list(ike.phase2_integrity),
        "phase2_dh_group_numbers": list(ike.phase2_dh_groups),
        "phase2_lifetime_seconds": ike.phase2_lifetime_seconds,
        "rekey_margin_time_seconds": ike.rekey_margin_seconds,
        "rekey_fuzz_percentage": ike.rekey_fuzz_percentage,
        "replay_window_size": ike.replay_window_size,
        "dpd_timeout_seconds": ike.dpd_timeout_seconds,
        "dpd_timeout_action": ike.dpd_timeout_action,
        "startup_action": ike.startup_action,
        # AWS replaces tunnel endpoints during maintenance; with lifecycle control it waits
        # for us to do it (aws ec2 replace-vpn-tunnel), one tunnel at a time.
        "enable_tunnel_lifecycle_control": True,
        "log_options": {"cloudwatch_log_options": cloudwatch},
    }
    return {prefix + key: value for key, value in options.items()}


class SiteToSiteVpn(PlatformComponent):
    """A transit gateway attached to the VPC, a customer gateway and a two-tunnel VPN connection.

    A transit gateway, not a virtual private gateway: more VPCs can attach later, and its
    route table is where the VPN's BGP routes land. BGP routes propagate into that table;
    the VPC's private route tables send the private cloud's networks (one managed prefix
    list) to the transit gateway. Security groups admit that prefix list only where
    ``access`` says.

    Outputs: ``connection_id``, ``transit_gateway_id``, ``tunnels`` (outside and inside
    addresses, ASNs), ``pre_shared_keys`` (secret), ``on_prem_prefix_list_id``,
    ``resolver_inbound_addresses``; ``signals`` (tunnel state in Prometheus, through
    Monitoring's CloudWatch exporter).
    """

    def __init__(self, name: str, args: SiteToSiteVpnArgs, tags: TagContext, provider: aws.Provider,
                 opts: pulumi.ResourceOptions | None = None) -> None:  # fmt: skip
        config = args.config
        if len(args.private_subnet_ids) < 2 or len(args.private_route_table_ids) != len(args.private_subnet_ids):
            raise ValueError(f"{name}: needs one private subnet and route table per AZ, in at least 2 AZs")
        super().__init__("platform:vpn:SiteToSite", name, "vpn", tags, provider, opts)

        tgw = aws.ec2transitgateway.TransitGateway(
            self.child_name("tgw"), description=f"{args.name_prefix}: VPC and private cloud",
            amazon_side_asn=config.amazon_side_asn, auto_accept_shared_attachments="disable",
            # Our own route table, so what reaches which attachment is declared here.
            default_route_table_association="disable", default_route_table_propagation="disable",
            dns_support="enable",
            # One active tunnel per direction: on-prem firewalls see both halves of a flow.
            vpn_ecmp_support="disable",
            tags=self.tags("tgw"), opts=self.child_opts(),
        )  # fmt: skip
        route_table = aws.ec2transitgateway.RouteTable(self.child_name("tgw"), transit_gateway_id=tgw.id,
                                                       tags=self.tags("tgw"), opts=self.child_opts())  # fmt: skip
        vpc_attachment = aws.ec2transitgateway.VpcAttachment(
            self.child_name("vpc"), transit_gateway_id=tgw.id, vpc_id=args.vpc_id, subnet_ids=args.private_subnet_ids,
            dns_support="enable", transit_gateway_default_route_table_association=False,
            transit_gateway_default_route_table_propagation=False, tags=self.tags("vpc-attachment"),
            opts=self.child_opts(),
        )  # fmt: skip
        customer_gateway = aws.ec2.CustomerGateway(
            self.child_name("cgw"), type="ipsec.1", ip_address=str(config.customer_gateway.ip_address),
            bgp_asn=str(config.customer_gateway.bgp_asn), device_name=config.customer_gateway.device_name,
            tags=self.tags("cgw"), opts=self.child_opts(),
        )  # fmt: skip
        log_group = aws.cloudwatch.LogGroup(self.child_name("tunnels"), name=f"/platform/{args.name_prefix}/vpn",
                                            retention_in_days=config.log_retention_days, tags=self.tags("tunnel-logs"),
                                            opts=self.child_opts())  # fmt: skip

        keys = [self._pre_shared_key(config, tunnel) for tunnel in TUNNELS]
        options: dict[str, Any] = {}
        for tunnel, key in zip(TUNNELS, keys):
            options |= tunnel_options(config.ike, tunnel, str(config.tunnels[tunnel - 1].inside_cidr), key,
                                      log_group.arn, bgp_logs=config.routing == "bgp")  # fmt: skip
        connection = aws.ec2.VpnConnection(
            self.child_name("connection"), type="ipsec.1", customer_gateway_id=customer_gateway.id,
            transit_gateway_id=tgw.id, static_routes_only=config.routing == "static", tunnel_inside_ip_version="ipv4",
            **options, tags=self.tags("connection"), opts=self.child_opts(),
        )  # fmt: skip

        for suffix, attachment_id in (("vpc", vpc_attachment.id), ("vpn", connection.transit_gateway_attachment_id)):
            aws.ec2transitgateway.RouteTableAssociation(
                self.child_name(suffix), transit_gateway_attachment_id=attachment_id,
                transit_gateway_route_table_id=route_table.id, opts=self.child_opts())  # fmt: skip
            aws.ec2transitgateway.RouteTablePropagation(
                self.child_name(suffix), transit_gateway_attachment_id=attachment_id,
                transit_gateway_route_table_id=route_table.id, opts=self.child_opts())  # fmt: skip
        if config.routing == "static":
            for index, cidr in enumerate(config.on_prem_cidrs):
                aws.ec2transitgateway.Route(
                    self.child_name(f"onprem-{index}"), destination_cidr_block=str(cidr),
                    transit_gateway_attachment_id=connection.transit_gateway_attachment_id,
                    transit_gateway_route_table_id=route_table.id, opts=self.child_opts())  # fmt: skip

        prefix_list = aws.ec2.ManagedPrefixList(
            self.child_name("onprem"), name=f"{args.name_prefix}-private-cloud", address_family="IPv4",
            max_entries=len(config.on_prem_cidrs),
            entries=[{"cidr": str(cidr), "description": "private cloud (over the VPN)"} for cidr in config.on_prem_cidrs],
            tags=self.tags("onprem"), opts=self.child_opts(),
        )  # fmt: skip
        for index, route_table_id in enumerate(args.private_route_table_ids):
            aws.ec2.Route(self.child_name(f"private-{index}"), route_table_id=route_table_id,
                          destination_prefix_list_id=prefix_list.id, transit_gateway_id=tgw.id,
                          opts=self.child_opts(depends_on=[vpc_attachment]))  # fmt: skip
        self._access(config, args, prefix_list)
        self.resolver_inbound_addresses: pulumi.Output[list[str]] = pulumi.Output.from_input([])
        if config.dns is not None:
            self._dns(config, args, prefix_list)

        addresses = (connection.tunnel1_address, connection.tunnel2_address)
        self._alarms(args, connection.id, addresses)
        self.signals = alarms.exported_signals(args.name_prefix, connection.id, addresses)  # for Monitoring

        self.connection_id = connection.id
        self.transit_gateway_id = tgw.id
        self.on_prem_prefix_list_id = prefix_list.id
        self.tunnels = []
        for outside, tunnel in zip(addresses, config.tunnels):
            inside = inside_addresses(tunnel.inside_cidr)
            self.tunnels.append({"outsideAddress": outside, "insideCidr": str(tunnel.inside_cidr),
                                 "awsInsideAddress": str(inside.aws.ip), "customerInsideAddress": str(inside.customer.ip),
                                 "awsBgpAsn": config.amazon_side_asn})  # fmt: skip
        self.pre_shared_keys = pulumi.Output.secret(pulumi.Output.all(*keys))
        self.register_outputs({"connection_id": connection.id, "transit_gateway_id": tgw.id, "tunnels": self.tunnels,
                               "pre_shared_keys": self.pre_shared_keys,
                               "on_prem_prefix_list_id": prefix_list.id})  # fmt: skip

    def _pre_shared_key(self, config: VpnConfig, tunnel: int) -> pulumi.Output[str]:
        given = config.tunnels[tunnel - 1].pre_shared_key
        if given is not None:
            return pulumi.Output.secret(given.get_secret_value())
        # Letters only: AWS refuses a key that starts with 0; 40 letters are ~228 bits.
        generated = random.RandomPassword(self.child_name(f"tunnel{tunnel}-psk"), length=40, special=False,
                                          numeric=False, opts=pulumi.ResourceOptions(parent=self))  # fmt: skip
        return generated.result  # a secret output already

    def _access(self, config: VpnConfig, args: SiteToSiteVpnArgs, prefix_list: aws.ec2.ManagedPrefixList) -> None:
        targets = {
            "inference": (args.cluster_security_group_id, args.inference_port, "Private cloud to the model servers"),
            "awsEndpoints": (args.endpoint_security_group_id, 443, "Private cloud to AWS APIs (ECR pulls) over the VPN"),
        }
        for target in config.access:
            group_id, port, description = targets[target]
            aws.vpc.SecurityGroupIngressRule(
                self.child_name(f"in-{target}"), security_group_id=group_id, prefix_list_id=prefix_list.id,
                ip_protocol="tcp", from_port=port, to_port=port, description=description,
                tags=self.tags(f"in-{target}"), opts=self.child_opts())  # fmt: skip

    def _dns(self, config: VpnConfig, args: SiteToSiteVpnArgs, prefix_list: aws.ec2.ManagedPrefixList) -> None:
        dns = config.dns
        assert dns is not None
        group = aws.ec2.SecurityGroup(self.child_name("resolver"), vpc_id=args.vpc_id,
                                      description="Route 53 Resolver endpoints for the private cloud",
                                      tags=self.tags("resolver"), opts=self.child_opts())  # fmt: skip
        ip_addresses = [{"subnet_id": subnet_id} for subnet_id in args.private_subnet_ids]
        for protocol in ("udp", "tcp"):
            if dns.inbound:
                aws.vpc.SecurityGroupIngressRule(
                    self.child_name(f"resolver-in-{protocol}"), security_group_id=group.id,
                    prefix_list_id=prefix_list.id, ip_protocol=protocol, from_port=DNS_PORT, to_port=DNS_PORT,
                    description="On-prem resolvers ask for the VPC's names", tags=self.tags("resolver"),
                    opts=self.child_opts())  # fmt: skip
            for index, resolver in enumerate(dns.on_prem_resolvers if dns.forward_domains else []):
                aws.vpc.SecurityGroupEgressRule(
                    self.child_name(f"resolver-out-{protocol}-{index}"), security_group_id=group.id,
                    cidr_ipv4=f"{resolver}/32", ip_protocol=protocol, from_port=DNS_PORT, to_port=DNS_PORT,
                    description="Forwarded queries to an on-prem resolver", tags=self.tags("resolver"),
                    opts=self.child_opts())  # fmt: skip
        if dns.inbound:
            inbound = aws.route53.ResolverEndpoint(
                self.child_name("inbound"), name=f"{args.name_prefix}-inbound", direction="INBOUND",
                security_group_ids=[group.id], ip_addresses=ip_addresses, tags=self.tags("inbound"),
                opts=self.child_opts())  # fmt: skip
            self.resolver_inbound_addresses = inbound.ip_addresses.apply(
                lambda addresses: sorted(a.ip for a in addresses or [] if a.ip))
        if dns.forward_domains:
            outbound = aws.route53.ResolverEndpoint(
                self.child_name("outbound"), name=f"{args.name_prefix}-outbound", direction="OUTBOUND",
                security_group_ids=[group.id], ip_addresses=ip_addresses, tags=self.tags("outbound"),
                opts=self.child_opts())  # fmt: skip
            for index, domain in enumerate(dns.forward_domains):
                rule = aws.route53.ResolverRule(
                    self.child_name(f"forward-{index}"), domain_name=domain, rule_type="FORWARD",
                    resolver_endpoint_id=outbound.id, target_ips=[{"ip": str(ip), "port": DNS_PORT} for ip in dns.on_prem_resolvers],
                    tags=self.tags(f"forward-{index}"), opts=self.child_opts())  # fmt: skip
                aws.route53.ResolverRuleAssociation(self.child_name(f"forward-{index}"), resolver_rule_id=rule.id,
                                                    vpc_id=args.vpc_id, opts=self.child_opts())  # fmt: skip

    def _alarms(self, args: SiteToSiteVpnArgs, vpn_id: pulumi.Output[str],
                addresses: tuple[pulumi.Output[str], pulumi.Output[str]]) -> None:  # fmt: skip
        self.alarm_names: list[pulumi.Output[str]] = []
        for spec in alarms.tunnel_alarms():
            alarm = aws.cloudwatch.MetricAlarm(
                self.child_name(spec.name), name=f"{args.name_prefix}-vpn-{spec.name}",
                alarm_description=f"[{spec.severity}] {spec.description}",
                comparison_operator="LessThanThreshold", threshold=1,
                evaluation_periods=spec.evaluation_periods, datapoints_to_alarm=spec.evaluation_periods,
                treat_missing_data="breaching",
                metric_queries=alarms.alarm_metric_queries(spec, vpn_id, addresses),
                alarm_actions=[args.alarm_topic_arns[spec.severity]], ok_actions=[args.alarm_topic_arns[spec.severity]],
                tags={**self.tags(spec.name), "severity": spec.severity}, opts=self.child_opts(),
            )  # fmt: skip
            self.alarm_names.append(alarm.name)
