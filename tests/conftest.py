import pytest
from django.test import Client

from tests.utils import scrape


@pytest.fixture
def client() -> Client:
    return Client()


@pytest.fixture
def metrics(client):
    """Call to scrape /metrics and get parsed samples."""
    return lambda **kw: scrape(client, **kw)
