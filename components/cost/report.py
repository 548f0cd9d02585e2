"""The finance report: actual spend from Cost Explorer, by allocation tag, with the spot saving.

Cost Explorer's ``get_cost_and_usage`` grouped by the allocation tags (at most two, the
API's limit), every page followed (``NextPageToken``); throttling is retried with backoff by
botocore's adaptive retry mode. Spend without the tag is its own line ("(untagged)"), never
dropped. Spot savings: spot instance hours by type (``PURCHASE_TYPE`` x ``INSTANCE_TYPE``)
priced at the catalog's on-demand rate, against what they cost.
"""

from __future__ import annotations

import calendar
import csv
import io
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

UNTAGGED = "(untagged)"
METRICS = ("AmortizedCost", "UnblendedCost")
SPOT = "Spot Instances"


class ReportError(Exception):
    """The report cannot be made; ``str()`` says why (period, permission, API)."""


def period_bounds(period: str, today: date | None = None) -> tuple[str, str]:
    """``2026-10`` -> ("2026-10-01", "2026-11-01") (Cost Explorer's end is exclusive)."""
    match = re.fullmatch(r"(\d{4})-(\d{2})", period)
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise ReportError(f"--period {period!r}: expected a month as YYYY-MM, e.g. 2026-10")
    year, month = int(match.group(1)), int(match.group(2))
    start = date(year, month, 1)
    if start > (today or date.today()):
        raise ReportError(f"--period {period}: the month has not started; nothing has been spent yet")
    end = start + timedelta(days=calendar.monthrange(year, month)[1])
    return start.isoformat(), end.isoformat()


def cost_explorer(session: Any = None) -> Any:
    import boto3
    from botocore.config import Config

    # Cost Explorer throttles at a few requests per second: botocore's adaptive mode backs off.
    return (session or boto3).client("ce", region_name="us-east-1",
                                     config=Config(retries={"mode": "adaptive", "max_attempts": 10}))  # fmt: skip


def _call(ce: Any, **request: Any) -> list[dict[str, Any]]:
    """Every page of one get_cost_and_usage request."""
    from botocore.exceptions import ClientError

    results: list[dict[str, Any]] = []
    token = None
    while True:
        try:
            response = ce.get_cost_and_usage(**request, **({"NextPageToken": token} if token else {}))
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("AccessDeniedException", "AccessDenied", "UnauthorizedOperation"):
                raise ReportError("Cost Explorer refused the request: the caller needs ce:GetCostAndUsage "
                                  "(and Cost Explorer enabled for the account)") from exc  # fmt: skip
            if code == "DataUnavailableException":
                raise ReportError("Cost Explorer has no data for this period yet (it lags up to 24 hours)") from exc
            raise ReportError(f"Cost Explorer: {code}: {exc}") from exc
        results.extend(response.get("ResultsByTime", []))
        token = response.get("NextPageToken")
        if not token:
            return results


def _tag_value(key: str) -> str:
    """Cost Explorer's ``environment$prod`` -> ``prod``; ``environment$`` -> untagged."""
    value = key.split("$", 1)[1] if "$" in key else key
    return value or UNTAGGED


@dataclass
class Report:
    period: str
    granularity: str
    group_by: list[str]
    rows: list[dict[str, Any]]  # {"date", <tag>..., "AmortizedCost", "UnblendedCost"}
    totals: dict[str, float]
    by_purchase_type: dict[str, float]
    spot_savings: dict[str, Any]
    estimate_vs_actual: list[dict[str, Any]] = field(default_factory=list)
    forecast: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def build_report(ce: Any, period: str, group_by: list[str], granularity: str = "DAILY",
                 on_demand_prices: dict[str, float] | None = None, ledger: dict[str, dict] | None = None,
                 today: date | None = None) -> Report:  # fmt: skip
    if not 1 <= len(group_by) <= 2:
        raise ReportError(f"--group-by {','.join(group_by)}: Cost Explorer groups by one or two tag keys")
    if granularity not in ("DAILY", "MONTHLY"):
        raise ReportError(f"--granularity {granularity}: DAILY or MONTHLY")
    start, end = period_bounds(period, today)
    span = {"TimePeriod": {"Start": start, "End": end}, "Granularity": granularity, "Metrics": list(METRICS)}
    rows: list[dict[str, Any]] = []
    for result in _call(ce, **span, GroupBy=[{"Type": "TAG", "Key": key} for key in group_by]):
        for group in result.get("Groups", []):
            row: dict[str, Any] = {"date": result["TimePeriod"]["Start"]}
            row |= {key: _tag_value(value) for key, value in zip(group_by, group["Keys"])}
            row |= {metric: round(float(group["Metrics"][metric]["Amount"]), 6) for metric in METRICS}
            rows.append(row)
    totals = {metric: round(sum(r[metric] for r in rows), 2) for metric in METRICS}
    by_purchase: dict[str, float] = {}
    spot_hours: dict[str, tuple[float, float]] = {}
    purchase = _call(ce, **{**span, "Metrics": ["UnblendedCost", "UsageQuantity"]},
                     GroupBy=[{"Type": "DIMENSION", "Key": "PURCHASE_TYPE"}, {"Type": "DIMENSION", "Key": "INSTANCE_TYPE"}])  # fmt: skip
    for result in purchase:
        for group in result.get("Groups", []):
            purchase_type, instance_type = group["Keys"]
            cost = float(group["Metrics"]["UnblendedCost"]["Amount"])
            by_purchase[purchase_type] = round(by_purchase.get(purchase_type, 0.0) + cost, 2)
            if purchase_type == SPOT and instance_type:
                hours = float(group["Metrics"]["UsageQuantity"]["Amount"])
                old = spot_hours.get(instance_type, (0.0, 0.0))
                spot_hours[instance_type] = (old[0] + hours, old[1] + cost)
    savings = _spot_savings(spot_hours, on_demand_prices or {})
    report = Report(period, granularity, group_by, rows, totals, by_purchase, savings)
    if ledger and "environment" in group_by:
        report.estimate_vs_actual = _estimate_vs_actual(rows, ledger)
    return report


def _spot_savings(spot_hours: dict[str, tuple[float, float]], prices: dict[str, float]) -> dict[str, Any]:
    per_type, unpriced = [], []
    for instance_type, (hours, cost) in sorted(spot_hours.items()):
        if instance_type not in prices:
            unpriced.append(instance_type)
            continue
        on_demand = hours * prices[instance_type]
        per_type.append({"instanceType": instance_type, "hours": round(hours, 2), "spotCost": round(cost, 2),
                         "onDemandCost": round(on_demand, 2), "saved": round(on_demand - cost, 2)})  # fmt: skip
    spot = sum(t["spotCost"] for t in per_type)
    on_demand = sum(t["onDemandCost"] for t in per_type)
    return {"types": per_type, "spotCost": round(spot, 2), "onDemandCost": round(on_demand, 2),
            "saved": round(on_demand - spot, 2), "savedFraction": round(1 - spot / on_demand, 4) if on_demand else None,
            "typesWithoutOnDemandPrice": unpriced}  # fmt: skip


def _estimate_vs_actual(rows: list[dict[str, Any]], ledger: dict[str, dict]) -> list[dict[str, Any]]:
    actual: dict[str, float] = {}
    for row in rows:
        actual[row["environment"]] = actual.get(row["environment"], 0.0) + row["UnblendedCost"]
    out = []
    for stack, entry in sorted(ledger.items()):
        spent = round(actual.get(stack, 0.0), 2)
        estimated = entry["totalMonthlyUsd"]
        out.append({"stack": stack, "estimatedMonthly": estimated, "actual": spent, "revision": entry["revision"],
                    "recordedAt": entry["recordedAt"],
                    "actualOverEstimate": round(spent / estimated, 3) if estimated else None})  # fmt: skip
    return out


def add_forecast(ce: Any, report: Report, today: date) -> None:
    """Unblended spend forecast from today to the period's end (when the month is not over)."""
    start, end = period_bounds(report.period, today)
    if date.fromisoformat(end) <= today:
        return
    response = ce.get_cost_forecast(TimePeriod={"Start": max(today, date.fromisoformat(start)).isoformat(), "End": end},
                                    Metric="UNBLENDED_COST", Granularity="MONTHLY")  # fmt: skip
    report.forecast = {"from": max(today, date.fromisoformat(start)).isoformat(), "to": end,
                       "unblendedCost": round(float(response["Total"]["Amount"]), 2)}  # fmt: skip


# --------------------------------------------------------------------------- output


def _summary(report: Report) -> list[tuple[str, ...]]:
    keys = report.group_by
    sums: dict[tuple[str, ...], list[float]] = {}
    for row in report.rows:
        key = tuple(row[k] for k in keys)
        sums.setdefault(key, [0.0, 0.0])
        sums[key][0] += row["AmortizedCost"]
        sums[key][1] += row["UnblendedCost"]
    return [(*key, f"{a:.2f}", f"{u:.2f}") for key, (a, u) in sorted(sums.items(), key=lambda i: -i[1][1])]


def to_csv(report: Report) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["date", *report.group_by, *METRICS])
    for row in report.rows:
        writer.writerow([row["date"], *(row[k] for k in report.group_by), *(row[m] for m in METRICS)])
    return buffer.getvalue()


def to_markdown(report: Report) -> str:
    lines = [f"### Spend {report.period} by {', '.join(report.group_by)}", "",
             "| " + " | ".join([*report.group_by, "amortized", "unblended"]) + " |",
             "|" + "---|" * len(report.group_by) + "---:|---:|"]  # fmt: skip
    lines += ["| " + " | ".join(row) + " |" for row in _summary(report)]
    lines += ["", f"Total: amortized ${report.totals['AmortizedCost']:,.2f}, unblended ${report.totals['UnblendedCost']:,.2f}."]
    if report.spot_savings["onDemandCost"]:
        s = report.spot_savings
        lines += [f"Spot saved ${s['saved']:,.2f} ({s['savedFraction']:.0%}) against ${s['onDemandCost']:,.2f} on demand."]
    for item in report.estimate_vs_actual:
        lines += [f"`{item['stack']}`: estimated ${item['estimatedMonthly']:,.2f}/month at {item['revision'][:7]}, "
                  f"spent ${item['actual']:,.2f}."]  # fmt: skip
    if report.forecast:
        lines += [f"Forecast {report.forecast['from']} → {report.forecast['to']}: ${report.forecast['unblendedCost']:,.2f}."]
    return "\n".join(lines) + "\n"


def to_xlsx(report: Report, path: Path) -> None:
    from openpyxl import Workbook
    from openpyxl.styles import Font

    book = Workbook()
    summary = book.active
    summary.title = "Summary"
    summary.append(["period", report.period])
    summary.append(["amortized USD", report.totals["AmortizedCost"]])
    summary.append(["unblended USD", report.totals["UnblendedCost"]])
    for purchase_type, usd in sorted(report.by_purchase_type.items()):
        summary.append([f"purchase type: {purchase_type}", usd])
    if report.forecast:
        summary.append([f"forecast to {report.forecast['to']}", report.forecast["unblendedCost"]])
    for item in report.estimate_vs_actual:
        summary.append([f"{item['stack']}: estimated monthly", item["estimatedMonthly"]])
        summary.append([f"{item['stack']}: actual", item["actual"]])
    grouped = book.create_sheet("By " + "+".join(report.group_by)[:25])
    grouped.append([*report.group_by, "amortized USD", "unblended USD"])
    for row in _summary(report):
        grouped.append([*row[:-2], float(row[-2]), float(row[-1])])
    daily = book.create_sheet("By day")
    daily.append(["date", *report.group_by, *METRICS])
    for row in report.rows:
        daily.append([row["date"], *(row[k] for k in report.group_by), *(row[m] for m in METRICS)])
    savings = book.create_sheet("Savings")
    savings.append(["instance type", "spot hours", "spot USD", "on-demand USD", "saved USD"])
    for item in report.spot_savings["types"]:
        savings.append([item["instanceType"], item["hours"], item["spotCost"], item["onDemandCost"], item["saved"]])
    for sheet in book.worksheets:
        for cell in sheet[1]:
            cell.font = Font(bold=True)
    book.save(path)


def to_chart(report: Report, path: Path, by: str) -> None:
    """Stacked daily spend by ``by`` (a group-by key), as PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display
    import matplotlib.pyplot as plt

    days = sorted({row["date"] for row in report.rows})
    series: dict[str, dict[str, float]] = {}
    for row in report.rows:
        series.setdefault(row[by], {}).setdefault(row["date"], 0.0)
        series[row[by]][row["date"]] += row["UnblendedCost"]
    figure, axes = plt.subplots(figsize=(10, 4))
    bottom = [0.0] * len(days)
    for name, values in sorted(series.items()):
        heights = [values.get(day, 0.0) for day in days]
        axes.bar(days, heights, bottom=bottom, label=name)
        bottom = [b + h for b, h in zip(bottom, heights)]
    axes.set_title(f"Daily unblended spend by {by}, {report.period}")
    axes.set_ylabel("USD")
    axes.tick_params(axis="x", rotation=90, labelsize=6)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def report_json(report: Report) -> str:
    return json.dumps(report.to_json(), indent=2, sort_keys=True) + "\n"
