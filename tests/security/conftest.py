"""The adversarial suite reuses the service fixtures: real servers, two tenants, both backends."""

from service.conftest import backend, client_a, client_b, server, tenant_a, tenant_b  # noqa: F401
