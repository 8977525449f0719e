"""The campaigns domain's schemas, one module per area."""
