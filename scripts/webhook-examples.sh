#!/usr/bin/env bash
# Real webhook payloads for tests/test_webhook_corpus.py: GitHub's, as octokit publishes
# them in the npm package @octokit/webhooks-examples (api.github.com/index.json), at the
# version pinned here, installed into .run/npm (not committed; `make clean` removes it).
# Nothing is done when that version is already there. tests/corpus.py reads VERSION.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=7.6.1
prefix=.run/npm
installed=$prefix/node_modules/@octokit/webhooks-examples/package.json

if [ -f "$installed" ] &&
  [ "$(node -p 'require(process.argv[1]).version' "$PWD/$installed")" = "$VERSION" ]; then
  exit 0  # the pinned version is there
fi
mkdir -p "$prefix"
npm install --prefix "$prefix" --no-save --no-package-lock --no-audit --no-fund \
  "@octokit/webhooks-examples@$VERSION"
echo "webhook-examples: installed @octokit/webhooks-examples@$VERSION into $prefix"
