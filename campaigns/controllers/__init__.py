"""The campaigns domain's controllers, one module per area."""
