"""Type-checked use of the upstream API (run by mypy, never by pytest)."""

from __future__ import annotations

import os
from datetime import timedelta

from pydantic import SecretStr

from sessionstore import SessionStore, Settings, UpstreamSettings
from sessionstore.upstream import (
    BackoffPolicy,
    HealthReport,
    ImapClient,
    Served,
    UpstreamPool,
    UpstreamRecord,
    UpstreamRecords,
    UpstreamSpec,
    Verdict,
    classify,
    connectors_for,
    credentials_for,
    get_profile,
)
from sessionstore.upstream.imap import ImapConnection


async def use_the_pool(store: SessionStore) -> None:
    settings = Settings()
    upstream: UpstreamSettings = settings.upstream
    policy: BackoffPolicy = get_profile("icloud").backoff
    delay: float = policy.delay(2)
    verdict: Verdict = classify(TimeoutError())
    async with UpstreamPool(
        store,
        connectors=connectors_for(upstream),
        credentials=credentials_for(settings, os.environ),
        settings=upstream,
        maintain_every=timedelta(seconds=30),
    ) as pool:
        spec = UpstreamSpec(name="mail", host="imap.example.com", port=993, username="a")
        record: UpstreamRecord = await pool.register("0.x", spec, secret=SecretStr("pw"))

        async def count(conn: ImapConnection) -> int:
            return await conn.get_email_count("INBOX")

        served: Served[int] = await pool.run("0.x", "mail", count, fallbacks=["backup"])
        client = ImapClient(pool, "0.x", "mail")
        total: int = await client.get_email_count()
        health: HealthReport = await client.health_check()
        records: dict[str, UpstreamRecord] = await UpstreamRecords(store).list("0.x")
        print(delay, verdict.action, record.state, served.upstream, total, health, records)
