"""The merchants domain's services, one module per area."""
