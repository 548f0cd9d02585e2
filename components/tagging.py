"""Standard tags: the keys finance's cost reports and the tag test rely on.

Tags are passed explicitly to every taggable resource (stack transforms would be
simpler, but Pulumi's mock monitor does not run them, so tests could not see them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

#: Keys every taggable AWS resource carries. ``Name`` follows :func:`resource_name`.
STANDARD_TAG_KEYS = ("environment", "component", "cost-center", "owner", "stack", "Name")


@dataclass(frozen=True)
class TagContext:
    """What is the same for every resource of one stack."""

    project: str
    stack: str
    environment: str
    cost_center: str
    owner: str
    extra: Mapping[str, str]

    def tags(self, component: str, name_suffix: str = "") -> dict[str, str]:
        """Tags for one resource of ``component``; ``name_suffix`` distinguishes siblings."""
        return standard_tags(self, component, name_suffix)


def resource_name(project: str, environment: str, component: str, suffix: str = "") -> str:
    """The ``Name`` convention: ``<project>-<environment>-<component>[-<suffix>]``."""
    parts = [project, environment, component] + ([suffix] if suffix else [])
    return "-".join(parts)


def standard_tags(context: TagContext, component: str, name_suffix: str = "") -> dict[str, str]:
    """Extra tags first, so the standard keys always win (config validation forbids clashes)."""
    return {
        **dict(context.extra),
        "environment": context.environment,
        "component": component,
        "cost-center": context.cost_center,
        "owner": context.owner,
        "stack": context.stack,
        "Name": resource_name(context.project, context.environment, component, name_suffix),
    }
