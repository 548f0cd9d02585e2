"""``platformctl cost …``: the offline estimate, the PR diff, the deploy-time ledger, the README block."""

from __future__ import annotations

import dataclasses
import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

app = typer.Typer(help="Cost: offline estimates, PR cost diffs, the deploy-time ledger.", no_args_is_help=True)
err = Console(stderr=True)
README_BEGIN = "<!-- BEGIN COST ESTIMATES (platformctl cost readme) -->"
README_END = "<!-- END COST ESTIMATES -->"


class Format(StrEnum):
    table = "table"
    json = "json"
    md = "md"


def _plan_json(stack: str, project_dir: Path | None, stacks_dir: Path | None) -> dict:
    from components.config import ConfigError
    from platformctl.offline import PlanError, run_offline_plan
    from platformctl.project import ProjectError, find_project

    try:
        project = find_project(project_dir)
        if stacks_dir is not None:
            project = dataclasses.replace(project, stack_config_dir=stacks_dir.resolve())
        return run_offline_plan(project, stack).to_json()
    except (ProjectError, ConfigError) as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except PlanError as exc:
        err.print(f"[red]error:[/] the program failed while planning {escape(stack)}: {escape(str(exc))}",
                  highlight=False, soft_wrap=True)  # fmt: skip
        raise typer.Exit(1) from None


def _estimate(plan: dict, usage_file: Path):
    from components.cost.estimate import UsageError, estimate, load_catalog, load_usage

    try:
        return estimate(plan, load_catalog(), load_usage(usage_file))
    except UsageError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _usage_file(stack: str, usage: Path | None, project_dir: Path | None) -> Path:
    from platformctl.project import find_project

    return usage or find_project(project_dir).stack_config_dir / "usage" / f"{stack}.yaml"


@app.command("estimate")
def estimate_command(
    stack: Annotated[str, typer.Option("--stack", "-s")] = "dev",
    compare_to: Annotated[Path | None, typer.Option(help="A base plan (`platformctl plan --format json`).")] = None,
    format: Annotated[Format, typer.Option("--format", "-f")] = Format.table,
    output: Annotated[Path | None, typer.Option("--output", "-o")] = None,
    usage: Annotated[Path | None, typer.Option(help="Usage file (default stacks/usage/<stack>.yaml).")] = None,
    project_dir: Annotated[Path | None, typer.Option("--project-dir")] = None,
    stacks_dir: Annotated[Path | None, typer.Option("--stacks-dir")] = None,
) -> None:
    """Monthly cost of a stack from its offline plan, the price catalog and the usage file."""
    from components.cost.estimate import compare, markdown

    usage_file = _usage_file(stack, usage, project_dir)
    head = _estimate(_plan_json(stack, project_dir, stacks_dir), usage_file)
    diff = None
    if compare_to is not None:
        try:
            base_plan = json.loads(compare_to.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            err.print(f"[red]error:[/] --compare-to {compare_to}: not a readable plan JSON ({exc})", soft_wrap=True)
            raise typer.Exit(2) from None
        diff = compare(head, _estimate(base_plan, usage_file))
    if format is Format.json:
        text = json.dumps({**head.to_json(), **({"compare": diff} if diff else {})}, indent=2, sort_keys=True) + "\n"
    elif format is Format.md:
        text = markdown(head, diff)
    else:
        text = None
    if text is not None:
        if output:
            output.write_text(text, encoding="utf-8")
        else:
            sys.stdout.write(text)
        return
    target = output.open("w", encoding="utf-8") if output else None
    console = Console(file=target, soft_wrap=True)
    if not console.is_terminal:
        console = Console(file=target, width=200)  # piped or logged: whole lines, nothing cut
    table = Table("component", "resource", "type", "monthly USD", "how", title=f"{stack}: estimated monthly cost")
    for line in sorted(head.lines, key=lambda l: (l.component, -l.monthly_usd)):
        table.add_row(line.component, line.resource, line.type, f"{line.monthly_usd:,.2f}", line.detail)
    console.print(table)
    console.print(f"total: ${head.total_monthly:,.2f}/month" + (f"  (delta {diff['delta']:+,.2f})" if diff else ""))
    for item in head.unpriced:
        console.print(f"not priced: {item['resource']} ({item['type']}): {item['reason']}", highlight=False)
    if head.usage_missing:
        console.print(f"usage not given (priced as zero): {', '.join(head.usage_missing)}", highlight=False)


def readme_block(project_dir: Path | None = None) -> str:
    """The README's estimates: every stack, regenerated by `platformctl cost readme`."""
    from platformctl.project import find_project

    project = find_project(project_dir)
    rows = ["| stack | monthly (USD) | GPU spot saving (at the usage file's assumed discount) |", "|---|---:|---|"]
    for stack in project.stacks():
        result = _estimate(_plan_json(stack, project_dir, None), project.stack_config_dir / "usage" / f"{stack}.yaml")
        saving = "; ".join(f"{pool}: ${s['spotMonthly']:,.2f} vs ${s['onDemandMonthly']:,.2f} on demand "
                           f"({s['savedFraction']:.0%} less)" for pool, s in result.savings.items()
                           if s["instances"]) or "-"  # fmt: skip
        rows.append(f"| {stack} | ${result.total_monthly:,.2f} | {saving} |")
    return "\n".join(rows) + "\n"


@app.command("readme")
def readme_command(
    write: Annotated[Path | None, typer.Option(help="Rewrite the block in this README.")] = None,
) -> None:
    """Print (or write into the README) every stack's estimate."""
    block = readme_block()
    if write is None:
        sys.stdout.write(block)
        return
    text = write.read_text(encoding="utf-8")
    head, begin, rest = text.partition(README_BEGIN)
    _, end, tail = rest.partition(README_END)
    if not (begin and end):
        err.print(f"[red]error:[/] {write}: the markers {README_BEGIN} … {README_END} are missing")
        raise typer.Exit(2)
    write.write_text(head + README_BEGIN + "\n" + block + README_END + tail, encoding="utf-8")


@app.command("record")
def record_command(
    stack: Annotated[str, typer.Option("--stack", "-s")],
    bucket: Annotated[str, typer.Option(envvar="COST_LEDGER_BUCKET", help="The ledger bucket (stack output).")],
    revision: Annotated[str, typer.Option(envvar="GITHUB_SHA", help="Git revision deployed.")] = "local",
    project_dir: Annotated[Path | None, typer.Option("--project-dir")] = None,
) -> None:
    """Record this deployment's estimate in the ledger (the deploy workflow runs it after `pulumi up`)."""
    import boto3

    from components.cost.ledger import record

    result = _estimate(_plan_json(stack, project_dir, None), _usage_file(stack, None, project_dir))
    key = record(boto3.client("s3"), bucket, result.to_json(), revision.lower())
    sys.stdout.write(f"recorded ${result.total_monthly:,.2f}/month for {stack} at s3://{bucket}/{key}\n")


prices_app = typer.Typer(help="The price catalog (components/cost/catalog.json).", no_args_is_help=True)
app.add_typer(prices_app, name="prices")


@prices_app.command("refresh")
def prices_refresh(
    catalog_file: Annotated[Path | None, typer.Option("--catalog")] = None,
) -> None:
    """Update the catalog's instance prices from the AWS Price List API (needs pricing:GetProducts)."""
    import boto3

    from components.cost.estimate import CATALOG
    from components.cost.prices import PRICING_REGION, PriceError, refresh_instances

    path = catalog_file or CATALOG
    catalog = json.loads(path.read_text(encoding="utf-8"))
    try:
        changes = refresh_instances(boto3.client("pricing", region_name=PRICING_REGION), catalog)
    except PriceError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}; the catalog is unchanged", soft_wrap=True)
        raise typer.Exit(1) from None
    path.write_text(json.dumps(catalog, indent=2) + "\n", encoding="utf-8")
    for instance_type, (old, new) in changes.items():
        sys.stdout.write(f"{instance_type}: {old} -> {new} USD/h\n")


class ReportFormat(StrEnum):
    table = "table"
    csv = "csv"
    xlsx = "xlsx"
    json = "json"
    md = "md"


@app.command("report")
def report_command(
    period: Annotated[str, typer.Option(help="Month, YYYY-MM.")],
    group_by: Annotated[str, typer.Option(help="One or two allocation tag keys, comma-separated.")] = "environment,component",
    granularity: Annotated[str, typer.Option(help="DAILY or MONTHLY.")] = "DAILY",
    format: Annotated[ReportFormat, typer.Option("--format", "-f")] = ReportFormat.table,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Required for xlsx.")] = None,
    chart: Annotated[Path | None, typer.Option(help="PNG: stacked daily spend by the last group-by key.")] = None,
    ledger_bucket: Annotated[str | None, typer.Option(envvar="COST_LEDGER_BUCKET",
                                                      help="Compare each stack's recorded estimate with its spend.")] = None,  # fmt: skip
    forecast: Annotated[bool, typer.Option(help="Forecast the rest of the month (Cost Explorer).")] = True,
) -> None:
    """Actual spend from Cost Explorer by allocation tag, spot savings, estimate against actual."""
    from datetime import date

    from components.cost.estimate import load_catalog
    from components.cost.report import (
        ReportError, add_forecast, build_report, cost_explorer, report_json, to_chart, to_csv, to_markdown, to_xlsx,
    )  # fmt: skip

    if format is ReportFormat.xlsx and output is None:
        err.print("[red]error:[/] --format xlsx needs --output FILE.xlsx")
        raise typer.Exit(2)
    keys = [k.strip() for k in group_by.split(",") if k.strip()]
    prices = {name: entry["usdPerHour"] for name, entry in load_catalog()["instances"].items()}
    try:
        ce = cost_explorer()
        ledger = _latest_ledger(ledger_bucket, period) if ledger_bucket else None
        report = build_report(ce, period, keys, granularity.upper(), prices, ledger)
        if forecast:
            add_forecast(ce, report, date.today())
    except ReportError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(2 if str(exc).startswith(("--period", "--group-by", "--granularity")) else 1) from None
    if not report.rows:
        err.print(f"no cost data for {period} grouped by {', '.join(keys)} (is Cost Explorer enabled, and are the "
                  "tags activated as cost allocation tags?)", soft_wrap=True)  # fmt: skip
    if chart is not None:
        to_chart(report, chart, keys[-1])
    if format is ReportFormat.xlsx:
        assert output is not None
        to_xlsx(report, output)
        return
    if format is ReportFormat.table:
        table = Table(*keys, "amortized USD", "unblended USD", title=f"Spend {period}")
        from components.cost.report import _summary

        for row in _summary(report):
            table.add_row(*row)
        console = Console(width=200) if not sys.stdout.isatty() else Console()
        console.print(table)
        console.print(f"total unblended ${report.totals['UnblendedCost']:,.2f}; by purchase type: "
                      + ", ".join(f"{k} ${v:,.2f}" for k, v in sorted(report.by_purchase_type.items())), soft_wrap=True)
        return
    text = {ReportFormat.csv: to_csv, ReportFormat.json: report_json, ReportFormat.md: to_markdown}[format](report)
    if output:
        output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)


def _latest_ledger(bucket: str, period: str) -> dict[str, dict]:
    """Each stack's last estimate recorded before the period ended."""
    import boto3

    from components.cost.ledger import LEDGER_PREFIX, read_ledger
    from components.cost.report import period_bounds

    s3 = boto3.client("s3")
    _, end = period_bounds(period)
    stacks = {key.split("/")[1] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{LEDGER_PREFIX}/")
              for key in (item["Key"] for item in page.get("Contents", []))}  # fmt: skip
    latest = {}
    for stack in sorted(stacks):
        entries = [e for e in read_ledger(s3, bucket, stack) if e["recordedAt"] < end]
        if entries:
            latest[stack] = entries[-1]
    return latest
