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
def _fresh_cache():
    """Cached permissions must not leak between tests (primary keys are reused)."""
    from django.core.cache import cache

    cache.clear()
