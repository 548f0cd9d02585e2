"""Keepalived failover pair protecting Redis: component, rendering, node agent (docs/failover.md)."""
