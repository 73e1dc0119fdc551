"""Connect a multi-tenant Django product to third-party APIs on its tenants' behalf."""

__version__ = "0.1.0"
