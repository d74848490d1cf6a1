"""On Redis Cluster the registry subscribes through one node; when that node dies it
moves to another, and pushes keep arriving (PUBLISH is broadcast cluster-wide)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sessionstore import (
    BreakerSettings,
    RedisSettings,
    create_client,
)
from sessionstore.breaker import BreakerAdmin, BreakerRegistry, BreakerState
from sessionstore.testing import LocalCluster
from tests.polling import eventually

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


async def test_subscription_moves_to_a_live_node_when_its_node_dies() -> None:
    """Stop the node the listener uses: it resubscribes through another node, and a
    transition of a breaker served by a live node reaches the registry by push alone
    (polling is effectively off)."""
    with LocalCluster(3) as cluster:
        settings = RedisSettings.from_dsn(
            cluster.url,
            connect_timeout=timedelta(milliseconds=300),
            socket_timeout=timedelta(milliseconds=500),
        )
        client = create_client(settings)
        other = create_client(settings)
        quiet = BreakerSettings(staleness_bound=timedelta(minutes=10))
        try:
            async with BreakerRegistry(client, quiet, key_prefix="lst") as registry:
                listener = registry._listener
                assert listener is not None

                async def live() -> bool:
                    return registry.health().push_live

                await eventually(live, timeout=10)
                first = listener.node
                victim = next(n for n in cluster.nodes if f"127.0.0.1:{n.port}" == first)
                # A breaker whose slot lives on a node that stays up.
                await other.initialize()  # type: ignore[union-attr]
                name = next(
                    f"up:{i}"
                    for i in range(1000)
                    if other.get_node_from_key(f"{{up:{i}}}").port != victim.port  # type: ignore[union-attr]
                )
                breaker = await registry.get(name)
                victim.stop(remove=False)

                async def moved() -> bool:
                    return registry.health().push_live and listener.node != first

                await eventually(moved, timeout=20)
                admin = BreakerAdmin(other, quiet, key_prefix="lst")
                await admin.force_open(name, actor="tester", reason="after failover of push")

                async def isolated() -> bool:
                    return breaker.state is BreakerState.FORCED_OPEN

                await eventually(isolated, timeout=10)
        finally:
            await client.aclose()
            await other.aclose()
