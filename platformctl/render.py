"""Text rendering of an offline plan: a tree grouped by component, and a summary."""

from __future__ import annotations

from collections import Counter, defaultdict

from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from platformctl.offline import Plan, PlannedResource

STACK_LEVEL = "(stack)"


def group_by_component(plan: Plan) -> dict[str, list[PlannedResource]]:
    """Top-level component name → the custom resources under it (providers under (stack))."""
    groups: dict[str, list[PlannedResource]] = defaultdict(list)
    for resource in plan.resources:
        if not resource.custom:
            continue
        component = plan.component_of(resource)
        groups[component.name if component is not None else STACK_LEVEL].append(resource)
    return dict(groups)


def summary_line(plan: Plan) -> str:
    custom = [r for r in plan.resources if r.custom and not r.is_provider]
    providers = [r for r in plan.resources if r.is_provider]
    components = [r for r in plan.resources if not r.custom]
    return (
        f"stack {plan.stack}: {len(custom)} resources, {len(providers)} explicit provider"
        f"{'s' if len(providers) != 1 else ''}, {len(components)} component"
        f"{'s' if len(components) != 1 else ''}"
    )


def _names(resources: list[PlannedResource], limit: int = 3) -> str:
    names = sorted(r.name for r in resources)
    shown = ", ".join(names[:limit])
    return shown + (f", … (+{len(names) - limit})" if len(names) > limit else "")


def render_text(plan: Plan, console: Console) -> None:
    root = Tree(f"[bold]{plan.project}[/] / [bold]{plan.stack}[/]  ({plan.stack_file})")
    groups = group_by_component(plan)
    for component_name in sorted(groups, key=lambda name: (name != STACK_LEVEL, name)):
        resources = groups[component_name]
        if component_name == STACK_LEVEL:
            label = f"[bold]{STACK_LEVEL}[/]"
        else:
            component = next(r for r in plan.resources if r.name == component_name and not r.custom)
            label = f"[bold]{component_name}[/]  [dim]{component.type}[/]"
        table = Table(show_header=True, header_style="dim", box=None, pad_edge=False)
        table.add_column("type", no_wrap=True)
        table.add_column("count", justify="right", no_wrap=True, min_width=5)
        table.add_column("logical names", no_wrap=True, overflow="ellipsis", max_width=48)
        by_type: dict[str, list[PlannedResource]] = defaultdict(list)
        for resource in resources:
            by_type[resource.type].append(resource)
        for type_token in sorted(by_type):
            table.add_row(type_token, str(len(by_type[type_token])), _names(by_type[type_token]))
        branch = root.add(label)
        branch.add(table)
    console.print(root)
    counts = Counter(r.type.split(":")[0] for r in plan.resources if r.custom and not r.is_provider)
    by_package = ", ".join(f"{n} {pkg}" for pkg, n in sorted(counts.items()))
    console.print(f"\n[bold]Plan:[/] {summary_line(plan)} ({by_package})")
    console.print(
        "[dim]Static offline plan: what the program declares for this config, run under Pulumi's "
        "mock monitor with no cloud account. It is not a diff against deployed state; "
        "\\[unknown] values are computed at deploy time. `pulumi preview` shows real changes.[/]"
    )
