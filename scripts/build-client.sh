#!/usr/bin/env bash
# Build the TypeScript client (clients/typescript) when its dist/ is missing or older
# than its sources: `npm ci` installs the lockfile's exact TypeScript, `npm run build`
# type-checks (strict) and compiles. The end-to-end test runs dist/ under Node.
set -euo pipefail
cd "$(dirname "$0")/../clients/typescript"

built=dist/index.js
if [ -f "$built" ] &&
  [ -z "$(find src package.json package-lock.json tsconfig.json -newer "$built" -print -quit)" ]; then
  exit 0  # up to date
fi
npm ci --no-audit --no-fund
npm run build
touch "$built"  # newer than every source now, even if tsc left it as it was
echo "build-client: built clients/typescript/dist"
