"""Real webhook payloads, published by the platforms rather than written by us
(tests/fixtures/README.md says where each comes from).

- GitHub: octokit's examples, the npm package ``@octokit/webhooks-examples`` at the version
  pinned in scripts/webhook-examples.sh, which ``make bootstrap`` installs into .run/npm
  (not committed). Its ``<variant>/index.json`` is a list of ``{name, actions, examples}``.
- GitLab: the payload examples of GitLab's webhook documentation, copied into
  tests/fixtures/gitlab-docs/ as ``<object_kind>.<variant>.json``.

Every function hands out fresh copies: a test may change what it gets.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from pathlib import Path
from typing import Any

__all__ = [
    "GITHUB_EXAMPLES",
    "GITLAB_DOCS",
    "CorpusMissing",
    "github_actions",
    "github_events",
    "github_examples",
    "gitlab_docs",
    "octokit_version",
]

ROOT = Path(__file__).resolve().parent.parent
INSTALL_SCRIPT = ROOT / "scripts" / "webhook-examples.sh"
GITHUB_EXAMPLES = ROOT / ".run" / "npm" / "node_modules" / "@octokit" / "webhooks-examples"
GITLAB_DOCS = Path(__file__).resolve().parent / "fixtures" / "gitlab-docs"
GITHUB_DOTCOM = "api.github.com"  # the package's other variants are GitHub Enterprise's


class CorpusMissing(RuntimeError):
    """The installed corpus is missing or not at its pinned version."""


def octokit_version() -> str:
    """The pinned version of @octokit/webhooks-examples (``VERSION=`` in the script)."""
    found = re.search(r"^VERSION=(\S+)$", INSTALL_SCRIPT.read_text(), re.MULTILINE)
    if found is None:
        raise CorpusMissing(f"{INSTALL_SCRIPT} pins no VERSION=")
    return found[1]


@functools.cache
def _github_index(variant: str) -> dict[str, dict[str, Any]]:
    pinned = octokit_version()
    manifest = GITHUB_EXAMPLES / "package.json"
    advice = (
        f"run `make bootstrap` (or scripts/webhook-examples.sh) to install "
        f"@octokit/webhooks-examples@{pinned} into {GITHUB_EXAMPLES.parents[2]}"
    )
    if not manifest.is_file():
        raise CorpusMissing(f"octokit's webhook examples are not installed: {advice}.")
    installed = json.loads(manifest.read_text())["version"]
    if installed != pinned:
        raise CorpusMissing(
            f"@octokit/webhooks-examples {installed} is installed, {pinned} is pinned: {advice}."
        )
    index = GITHUB_EXAMPLES / variant / "index.json"
    if not index.is_file():
        raise CorpusMissing(f"{index} is missing: @octokit/webhooks-examples has no {variant!r}.")
    return {entry["name"]: entry for entry in json.loads(index.read_text())}


def github_events(variant: str = GITHUB_DOTCOM) -> list[str]:
    """The events the package has examples of, in its order."""
    return list(_github_index(variant))


def github_actions(event: str, variant: str = GITHUB_DOTCOM) -> list[str]:
    """The actions GitHub documents for ``event`` (some have no example)."""
    return list(_entry(event, variant).get("actions") or [])


def github_examples(
    event: str, action: str | None = None, *, variant: str = GITHUB_DOTCOM
) -> list[dict[str, Any]]:
    """Octokit's example payloads of ``event`` (``X-GitHub-Event``), in the package's
    order; only those of ``action`` when given (none when GitHub documents the action but
    the package has no example of it, as for ``issues`` ``closed``)."""
    entry = _entry(event, variant)
    if action is not None and action not in (entry.get("actions") or []):
        raise ValueError(
            f"GitHub documents no action {action!r} for {event!r}: {entry.get('actions')}"
        )
    return [
        copy.deepcopy(example)
        for example in entry["examples"]
        if action is None or example.get("action") == action
    ]


def _entry(event: str, variant: str) -> dict[str, Any]:
    index = _github_index(variant)
    if event not in index:
        raise KeyError(f"no GitHub event {event!r} in octokit's examples: {sorted(index)}")
    return index[event]


def gitlab_docs(kind: str | None = None) -> dict[str, bytes]:
    """GitLab's documented payloads, by file name without ``.json``
    (``merge_request.open``), each the exact bytes of its file; only those whose name
    starts with ``kind`` (the ``object_kind``, or the event for a payload without one)."""
    return {
        path.stem: path.read_bytes()
        for path in sorted(GITLAB_DOCS.glob("*.json"))
        if kind is None or path.stem.split(".", 1)[0] == kind
    }
