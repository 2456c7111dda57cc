"""The scrape: what ``GET /metrics`` serves, free of HTTP.

- ``exposition``: one scrape's body for a ``catalogue.Visibility`` and a format;
- ``folder``, ``mmap_keys``, ``encoder``: the incremental reader of the multiprocess
  folder and the cached encoder;
- ``multiprocess``: the folder's life (checks, archive of exited processes);
- ``collectors``, ``queries``: the families computed at each scrape, from the database
  within ``budget``.

Nothing here imports Django's HTTP layer, DRF, guardian or django-ratelimit (checked by
import-linter): the view authenticates, decides visibility and negotiates, then calls
``exposition.render``.
"""
