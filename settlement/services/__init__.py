"""The settlement domain's services, one module per area."""
