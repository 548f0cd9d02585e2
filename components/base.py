"""What every platform component shares: explicit provider, parent, tags."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_aws as aws

from components.tagging import TagContext


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

    def tags(self, name_suffix: str = "") -> dict[str, str]:
        return self._tag_context.tags(self._component, name_suffix)
