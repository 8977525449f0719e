"""The merchants domain's schemas, one module per area."""
