"""v6-positions: an IB options account's positions in Delta Lake, orchestrated by Dagster."""
