"""The campaigns domain's services, one module per area."""
