from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from components.tagging import STANDARD_TAG_KEYS, TagContext, resource_name, standard_tags

CONTEXT = TagContext(
    project="platform", stack="prod", environment="prod", cost_center="ml", owner="team", extra={"x": "y"}
)


def test_standard_tags_exactly():
    assert standard_tags(CONTEXT, "network", "vpc") == {
        "x": "y",
        "environment": "prod",
        "component": "network",
        "cost-center": "ml",
        "owner": "team",
        "stack": "prod",
        "Name": "platform-prod-network-vpc",
    }


def test_name_without_suffix():
    assert resource_name("platform", "dev", "network") == "platform-dev-network"


text = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)


@given(st.dictionaries(st.sampled_from([*STANDARD_TAG_KEYS, "team", "app"]), text), text, text)
def test_standard_keys_are_always_present_and_win_over_extra(extra, component, suffix):
    context = TagContext("platform", "dev", "dev", "cc", "owner", extra)
    tags = standard_tags(context, component, suffix)
    assert set(STANDARD_TAG_KEYS) <= set(tags)
    assert tags["component"] == component
    assert tags["environment"] == "dev"
    assert tags["Name"] == f"platform-dev-{component}-{suffix}"
    for key, value in extra.items():
        if key not in STANDARD_TAG_KEYS:
            assert tags[key] == value
