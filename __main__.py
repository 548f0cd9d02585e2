"""The GPU inference platform: loads the stack's config, then composes components.

Decisions live in the components and their pure functions; environments differ by
stack config only (stacks/Pulumi.<stack>.yaml).
"""

import pulumi
import pulumi_aws as aws

from components.config import load_platform_config
from components.network import Network, NetworkArgs
from components.tagging import TagContext

# Validated before any resource is declared: a bad stack file stops here.
config = load_platform_config()

tags = TagContext(
    project=pulumi.get_project(),
    stack=pulumi.get_stack(),
    environment=config.environment,
    cost_center=config.tags.cost_center,
    owner=config.tags.owner,
    extra=config.tags.extra,
)
aws_provider = aws.Provider(
    "aws",
    region=config.aws.region,
    allowed_account_ids=config.aws.allowed_account_ids or None,
)

network = Network(
    "network",
    NetworkArgs(config=config.network, region=config.aws.region, nat_mode=config.nat_gateway_mode),
    tags=tags,
    provider=aws_provider,
)

pulumi.export("vpcId", network.vpc_id)
pulumi.export("privateSubnetIds", network.private_subnet_ids)
pulumi.export("publicSubnetIds", network.public_subnet_ids)
