"""``zhongtai models``: train | backtest | ceiling | crossval | snapshot (see docs/data-hub.md, "Trained scores")."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

DEFAULT_ARTIFACT = "models/scores.json"
TRAIN_SEEDS = [1, 2, 3, 4, 5, 6]  # the shipped artifact's training populations (never evaluated on)


def _train(args: argparse.Namespace) -> int:
    import tempfile

    from devtools.models import dataset, train
    from devtools.models.backtest import split_dates
    from devtools.population import Population
    from services.data_hub.domain import Rules

    async def build() -> dataset.Dataset:
        if args.from_database:  # a hub's own snapshots and facts (zhongtai models snapshot first)
            from services.kit.db import create_engine

            engine = create_engine(args.from_database)
            try:
                return await dataset.from_database(engine)
            finally:
                await engine.dispose()
        parts = []
        with tempfile.TemporaryDirectory(prefix="zt-train-") as tmp:
            for seed in args.seed:
                events = Population(seed=seed, customers=args.customers, months=args.months).events()
                parts.append(await dataset.build(events, Path(tmp) / f"hub-{seed}.db", Rules()))
        return dataset.concat(parts)

    ds = asyncio.run(build())
    trains, evals = split_dates(ds)
    # Trained on every date whose window is inside the data (the back-test holds the last ones out).
    dates = trains + evals if args.all_dates else trains
    info = train.training_info(args.seed, args.customers, args.months, dates)
    if args.from_database:
        info = {"source": "hub database", "dates": info["dates"]}
    artifact = train.fit(ds, dates, training=info)
    path = train.write(artifact, Path(args.out))
    print(f"trained {artifact['version']}: {artifact['training']} -> {path}")
    return 0


def _snapshot(args: argparse.Namespace) -> int:
    from services.data_hub import schema
    from services.data_hub.config import DataHubSettings
    from services.data_hub.snapshots import due, take
    from services.kit.db import UnitOfWork, create_engine

    async def run() -> int:
        settings = DataHubSettings()  # type: ignore[call-arg]
        engine = create_engine(args.database_url or settings.database_url)
        try:
            async with UnitOfWork(engine) as uow:
                tables = await schema.active_tables(uow.session)
                months = await due(uow.session, tables)
            for month in months:
                async with UnitOfWork(engine) as uow:
                    rows = await take(uow.session, tables, month, settings.rules)
                    await uow.commit()
                print(f"snapshot {month}: {rows} customers")
            return 0
        finally:
            await engine.dispose()

    return asyncio.run(run())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="zhongtai models", description=__doc__.split("\n")[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--customers", type=int, default=800, help="population size (default 800)")
    common.add_argument("--months", type=int, default=33, help="simulated months (default 33)")
    bt = sub.add_parser("backtest", parents=[common], help="train on earlier months, evaluate on later ones")
    bt.add_argument(
        "--seed", type=int, nargs="+", default=[101], help="the held-out populations evaluated (default 101)"
    )
    bt.add_argument(
        "--train-seed",
        type=int,
        nargs="+",
        default=TRAIN_SEEDS,
        help="the populations trained on (default 1-6)",
    )
    bt.add_argument("--out", default="var/backtest", help="where the HTML report goes")
    tr = sub.add_parser("train", parents=[common], help="fit the scores and write the versioned artifact")
    tr.add_argument("--seed", type=int, nargs="+", default=TRAIN_SEEDS, help="the populations trained on (default 1-6)")
    tr.add_argument("--out", default=DEFAULT_ARTIFACT, help=f"artifact path (default {DEFAULT_ARTIFACT})")
    tr.add_argument("--all-dates", action="store_true", help="also train on the dates a back-test holds out")
    tr.add_argument(
        "--from-database",
        default="",
        metavar="URL",
        help="train on this hub database's snapshots and facts instead of a simulated population",
    )
    ce = sub.add_parser("ceiling", parents=[common], help="the churn AUC of the simulator's own hidden state")
    ce.add_argument("--seed", type=int, nargs="+", default=[202], help="the held-out populations (default 202)")
    ce.add_argument("--train-seed", type=int, nargs="+", default=[1, 2, 3], help="fitted on (default 1-3)")
    ce.add_argument("--artifact", default=DEFAULT_ARTIFACT, help="also its score ('' for none)")
    cv = sub.add_parser("crossval", parents=[common], help="the offer model, each training population left out in turn")
    cv.add_argument("--seed", type=int, nargs="+", default=TRAIN_SEEDS, help="the training populations (default 1-6)")
    sn = sub.add_parser("snapshot", help="take the hub database's due monthly feature snapshots")
    sn.add_argument("--database-url", default="", help="default: ZT_DATABASE_URL")
    args = parser.parse_args(argv)
    if args.command == "backtest":
        from devtools.models import backtest

        return backtest.main(args)
    if args.command == "train":
        return _train(args)
    if args.command == "ceiling":
        from devtools.models import ceiling

        return ceiling.main(args)
    if args.command == "crossval":
        from devtools.models import crossval

        return crossval.main(args)
    return _snapshot(args)


if __name__ == "__main__":
    sys.exit(main())
