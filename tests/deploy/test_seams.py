"""The typed seams of deploy/ (deploy/serve/seams.py): the real parts and the test doubles both satisfy them,
so a test double cannot drift from what the service classes call."""

from __future__ import annotations

from deploy.pipeline.gateway import Gateway
from deploy.pipeline.router_service import RouterService
from deploy.serve.seams import GatewayClient, RegistryReader, RouterClient, ServiceRegistry
from registry import Registry
from tests.deploy.doubles import FakeGateway, FakeRegistry, FakeRouter


def test_registry_and_its_double_satisfy_the_registry_protocols():
    for registry in (Registry("sqlite://"), FakeRegistry()):
        assert isinstance(registry, RegistryReader)
        assert isinstance(registry, ServiceRegistry)


def test_router_and_gateway_and_their_doubles_satisfy_the_client_protocols():
    assert isinstance(FakeRouter(), RouterClient)
    assert isinstance(FakeGateway(), GatewayClient)
    for method in ("route", "route_embedded", "status"):
        assert callable(getattr(RouterService, method))
    for method in ("complete", "stream", "status"):
        assert callable(getattr(Gateway, method))


def test_the_double_refuses_sql_sessions_with_a_typed_error():
    import pytest

    from router.errors import RegistryUnavailable

    with pytest.raises(RegistryUnavailable):
        FakeRegistry().session()
