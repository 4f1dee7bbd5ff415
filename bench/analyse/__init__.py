"""analyse: aggregation of every run into tidy tables and DVC metrics."""
