"""Cost: the offline estimate (estimate.py, catalog.json), budgets and exports (component.py),
the deploy-time ledger (ledger.py). See docs/cost.md."""
