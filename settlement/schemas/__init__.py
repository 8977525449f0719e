"""The settlement domain's schemas, one module per area."""
