"""Trained scores end to end: train on a small seeded population, load the artifact in a real
hub on Kafka and PostgreSQL, read the model's scores and reasons through the gateway's
``GET /v1/customers/{id}/view``."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
from sqlalchemy import select

from bank.datahub.v1 import datahub_pb2
from devtools.models import dataset, train
from devtools.population import Population
from devtools.stack import free_port
from services.cli import DEV_SECRET
from services.data_hub import schema
from services.data_hub.domain import RULES_VERSION, Rules
from services.kit.auth import mint_token
from services.kit.db import UnitOfWork, create_engine
from tests.support.procs import ServiceProcess

from .conftest import hub, namespace, send, wait_until


async def test_a_trained_artifact_scores_the_views_with_reasons(kafka_server, pg_url, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    prefix = f"m{uuid.uuid4().hex[:6]}"
    events = Population(seed=3, customers=120, months=16, prefix=prefix).events()
    ds = await dataset.build(events, tmp_path / "train.db", Rules())
    artifact = train.fit(ds, dataset.churn_dates(ds), training={"test": True})
    path = train.write(artifact, tmp_path / "models" / "scores.json")
    version = artifact["version"]
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["scores.json"]  # one copy: the version is inside

    ns = namespace()
    proc = hub(
        pg_url, kafka_server.bootstrap_servers, tmp_path, topic_prefix=ns, ZT_DATAHUB_MODEL_PATH=str(path)
    ).start()
    gateway = None
    engine = create_engine(pg_url)
    try:
        await send(events, kafka_server.bootstrap_servers, ns)
        views: dict[str, datahub_pb2.CustomerView] = {}
        last = {}  # customer -> newest event time: the view is complete when it shows it
        for e in events:
            if e.aggregate_type != "product":
                cid = getattr(e.payload, "customer_id", "")
                last[cid] = max(last.get(cid, 0), int(e.time.timestamp()))

        async def scored() -> bool:
            async with UnitOfWork(engine) as uow:
                c = (await schema.active_tables(uow.session)).customers
                rows = (await uow.session.execute(select(c.c.customer_id, c.c.doc, c.c.dirty))).all()
            views.clear()
            views.update({r.customer_id: datahub_pb2.CustomerView.FromString(r.doc) for r in rows if r.doc})
            done = all(cid in views and views[cid].last_event_time.seconds == t for cid, t in last.items())
            return done and not any(r.dirty for r in rows)

        await wait_until(scored, 90, "every view rendered")
        assert "trained scores loaded" in proc.log_text()
        by_model = [v for v in views.values() if v.churn_risk.model_version == version]
        assert len(by_model) > 20  # active customers holding something: the model's population
        # the others (left, nothing held) keep the rules' score, and say so
        assert all(v.churn_risk.model_version in (version, RULES_VERSION) for v in views.values())
        riskiest = max(by_model, key=lambda v: v.churn_risk.score)
        assert riskiest.churn_risk.reasons and riskiest.churn_risk.score > 0
        with_offers = next(v for v in by_model if v.offers and v.offers[0].model_version == version)

        gateway = ServiceProcess(
            "gateway",
            env={
                "ZT_AUTH_HS256_SECRET": DEV_SECRET,
                "ZT_DATAHUB_TARGET": proc.target,
                "ZT_CUSTOMER_TARGET": f"127.0.0.1:{free_port()}",
                "ZT_PRODUCT_TARGET": f"127.0.0.1:{free_port()}",
            },
            log_dir=tmp_path,
        ).start()
        token = mint_token(DEV_SECRET, ["views:read"], client_id="models-test")
        async with httpx.AsyncClient(base_url=f"http://{gateway.target}", timeout=10) as client:
            for v in (riskiest, with_offers):
                reply = await client.get(
                    f"/v1/customers/{v.customer_id}/view", headers={"authorization": f"Bearer {token}"}
                )
                assert reply.status_code == 200, reply.text
                body = reply.json()
                assert body["churnRisk"]["modelVersion"] == version
                assert body["churnRisk"]["reasons"] == list(v.churn_risk.reasons)
                assert body["churnRisk"].get("score", 0) == v.churn_risk.score
                assert [o["modelVersion"] for o in body.get("offers", [])] == [o.model_version for o in v.offers]
        assert body["offers"][0]["reasons"][0] == "NOT_HELD"
    finally:
        if gateway is not None:
            gateway.stop()
        proc.stop()
        await engine.dispose()
