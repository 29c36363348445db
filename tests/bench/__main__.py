"""``python -m tests.bench [--quick] [--only NAME ...]``: see ``tests/bench/runner.py``."""

import argparse
import logging
import os
import sys
from pathlib import Path

from tests.bench import runner


def prepare_database(url: str) -> None:
    """Drop and create the benchmark's PostgreSQL database (never SQLite: it is not measured)."""
    import psycopg
    from psycopg import sql

    from buildhub.env import database_from_url

    db = database_from_url(url, conn_max_age=0)  # refuses anything but postgres://
    admin = psycopg.connect(
        host=db["HOST"] or None,
        port=db["PORT"] or None,
        user=db["USER"] or None,
        password=db["PASSWORD"] or None,
        dbname="postgres",
        autocommit=True,
        connect_timeout=5,
    )
    with admin:
        name = sql.Identifier(db["NAME"])
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(name))


def prepare_redis(url: str) -> None:
    import redis

    redis.Redis.from_url(url, socket_timeout=5).flushdb()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    parser.add_argument(
        "--only", action="append", metavar="NAME", help="run only this benchmark (repeatable)"
    )
    parser.add_argument(
        "--output", type=Path, default=Path("var/bench/results.json"), help="JSON results file"
    )
    args = parser.parse_args(argv)

    modules = runner.discover(only=args.only)
    ctx = runner.BenchContext(
        database_url=os.environ.get("BENCH_DATABASE_URL") or runner.DEFAULT_DATABASE_URL,
        redis_url=os.environ.get("BENCH_REDIS_URL")
        or os.environ.get("REDIS_URL")
        or runner.DEFAULT_REDIS_URL,
        quick=args.quick,
    )
    ctx.log(f"database {runner.redact_url(ctx.database_url)} (dropped and created)")
    prepare_database(ctx.database_url)
    ctx.log(f"redis {runner.redact_url(ctx.redis_url)} (emptied)")
    prepare_redis(ctx.redis_url)

    # Settings read these at import; worker and server processes inherit them.
    os.environ["DATABASE_URL"] = ctx.database_url
    os.environ["REDIS_URL"] = ctx.redis_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "buildhub.settings")
    import django
    from django.core.management import call_command

    django.setup()
    logging.getLogger("buildhub").setLevel(logging.WARNING)  # benchmarks speak via ctx.log
    call_command("migrate", interactive=False, verbosity=0)
    ctx.log("migrated")

    rows = runner.run_modules(modules, ctx)
    print(runner.render_table(rows))
    runner.write_results(args.output, rows, ctx)
    print(f"\nwritten to {args.output}")
    return runner.exit_code(rows)


if __name__ == "__main__":
    sys.exit(main())
