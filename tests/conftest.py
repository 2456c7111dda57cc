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
def _fresh_caches():
    """Cached permissions and admissions must not leak between tests: each test's
    database rows are rolled back (and primary keys reused)."""
    from django.core.cache import cache

    from tamma_metrics import labels, record

    cache.clear()
    labels.reset()
    record.clear_cache()
