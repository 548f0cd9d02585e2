"""Refreshing the catalog's instance prices from the AWS Price List API (``pricing.get_products``)."""

from __future__ import annotations

import json
import time
from typing import Any

PRICING_REGION = "us-east-1"  # the Price List API's endpoint region (it serves every region's prices)


class PriceError(Exception):
    """A price could not be found; ``str()`` names the instance type and region."""


def product_filters(instance_type: str, region: str) -> list[dict[str, str]]:
    wanted = {"instanceType": instance_type, "regionCode": region, "operatingSystem": "Linux", "tenancy": "Shared",
              "preInstalledSw": "NA", "capacitystatus": "Used", "marketoption": "OnDemand"}  # fmt: skip
    return [{"Type": "TERM_MATCH", "Field": field, "Value": value} for field, value in wanted.items()]


def on_demand_hourly(price_list_item: str) -> float:
    """The USD per hour of one PriceList entry (a JSON string)."""
    product = json.loads(price_list_item)
    for offer in product["terms"]["OnDemand"].values():
        for dimension in offer["priceDimensions"].values():
            if dimension.get("unit") in ("Hrs", "Hours"):
                return float(dimension["pricePerUnit"]["USD"])
    raise PriceError(f"{product.get('product', {}).get('sku', '?')}: no hourly on-demand price dimension")


def refresh_instances(pricing: Any, catalog: dict[str, Any], today: str | None = None) -> dict[str, tuple[float, float]]:
    """Update every instance price in ``catalog`` in place; returns {type: (old, new)}."""
    today = today or time.strftime("%Y-%m-%d", time.gmtime())
    region = catalog["region"]
    changes: dict[str, tuple[float, float]] = {}
    for instance_type, entry in catalog["instances"].items():
        response = pricing.get_products(ServiceCode="AmazonEC2", Filters=product_filters(instance_type, region),
                                        FormatVersion="aws_v1", MaxResults=10)  # fmt: skip
        prices = sorted({on_demand_hourly(item) for item in response.get("PriceList", [])})
        if not prices:
            raise PriceError(f"{instance_type} in {region}: the Price List API returned no Linux on-demand price")
        if len(prices) > 1:
            raise PriceError(f"{instance_type} in {region}: ambiguous prices {prices}; the filters need tightening")
        changes[instance_type] = (entry["usdPerHour"], prices[0])
        entry.update(usdPerHour=prices[0], source="AWS Price List API (pricing.get_products)", date=today)
    catalog["version"] = today
    return changes
