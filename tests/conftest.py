import pytest
from django.test import Client

from tests.utils import scrape


@pytest.fixture
def client(django_user_model) -> Client:
    """A client signed in (by session) as a superuser, who sees every family."""
    client = Client()
    client.force_login(django_user_model.objects.create_superuser("scraper", password="x"))
    return client


@pytest.fixture
def anonymous() -> Client:
    return Client()


@pytest.fixture
def metrics(client):
    """Call to scrape /metrics and get parsed samples."""
    return lambda **kw: scrape(client, **kw)


@pytest.fixture(autouse=True)
def _fresh_state():
    """Cached permissions and admissions must not leak between tests: each test's
    database rows are rolled back (and primary keys reused)."""
    from django.core.cache import cache

    from tamma_metrics import conf

    cache.clear()
    conf.reset()


@pytest.fixture
def process_database_url(tmp_path):
    """A DATABASE_URL for other processes, on the database this run tests: a SQLite file,
    or a fresh database on the run's PostgreSQL server, dropped afterwards."""
    import os
    import uuid

    from django.db import connection

    if connection.vendor != "postgresql":
        yield f"sqlite:///{tmp_path}/db.sqlite3"
        return
    import dj_database_url
    import psycopg

    server = dj_database_url.parse(os.environ["DATABASE_URL"])
    name = f"tamma_proc_{uuid.uuid4().hex[:12]}"
    admin = psycopg.connect(
        host=server["HOST"],
        port=server["PORT"],
        user=server["USER"],
        password=server["PASSWORD"] or None,
        dbname="postgres",
        autocommit=True,
    )
    try:
        admin.execute(f'CREATE DATABASE "{name}"')
        user = f"{server['USER']}:{server['PASSWORD']}" if server["PASSWORD"] else server["USER"]
        yield f"postgres://{user}@{server['HOST']}:{server['PORT']}/{name}"
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()
