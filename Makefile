# Two commands: `make run` and `make test`. Both set up everything they need from a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt

.PHONY: run test lint fmt demo bench clean messages screenshots

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.run-deps: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e .
	touch $@

$(VENV)/.test-deps: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e '.[test]'
	touch $@ $(VENV)/.run-deps

$(VENV)/.bench-deps: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e '.[test,bench]'
	touch $@ $(VENV)/.test-deps $(VENV)/.run-deps

$(VENV)/.demo-deps: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e '.[demo]'
	touch $@ $(VENV)/.run-deps

# Browser tests drive Debian's Chromium through Playwright; never a downloaded browser.
.PHONY: chromium
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# `make run` and `make demo` keep their data (the SQLite database and the generated secret key) in
# the checkout's .data/ unless AUTHSERVER_HOME says otherwise; the installed command's default is
# ~/.local/share/authserver.
run demo: export AUTHSERVER_HOME ?= $(CURDIR)/.data

run: $(VENV)/.run-deps
	$(BIN)/authserver init
	$(BIN)/authserver serve

# The calendar MCP server (examples/calendar_mcp) beside authserver, on the same database as `make run`,
# on ports DEMO_PORT (authserver) and DEMO_MCP_PORT (the calendar), checked free before anything starts.
# The first seed run gives the demo server's own client a fresh secret (CALENDAR_MCP_CLIENT_ID/SECRET,
# exported to it) so it reports tool calls; the second prints the summary once both servers answer.
DEMO_PORT     ?= 8000
DEMO_MCP_PORT ?= 8001
DEMO_AS  := http://127.0.0.1:$(DEMO_PORT)
DEMO_MCP := http://127.0.0.1:$(DEMO_MCP_PORT)/mcp
demo: $(VENV)/.demo-deps
	@$(BIN)/python -m examples.calendar_mcp.seed --free-ports $(DEMO_PORT) $(DEMO_MCP_PORT)
	$(BIN)/authserver init
	@client=$$(AUTHSERVER_ISSUER=$(DEMO_AS) $(BIN)/python -m examples.calendar_mcp.seed --resource $(DEMO_MCP) \
	  --client-env) || exit 1; set -a; eval "$$client"; set +a; \
	trap 'kill $$as $$mcp 2>/dev/null; wait' EXIT INT TERM; \
	AUTHSERVER_ISSUER=$(DEMO_AS) $(BIN)/authserver serve --port $(DEMO_PORT) & as=$$!; \
	$(BIN)/python -m examples.calendar_mcp --issuer $(DEMO_AS) --resource $(DEMO_MCP) & mcp=$$!; \
	AUTHSERVER_ISSUER=$(DEMO_AS) $(BIN)/python -m examples.calendar_mcp.seed --resource $(DEMO_MCP) \
	  --wait $(DEMO_AS)/.well-known/oauth-authorization-server \
	         http://127.0.0.1:$(DEMO_MCP_PORT)/.well-known/oauth-protected-resource/mcp || exit 1; \
	while kill -0 $$as 2>/dev/null && kill -0 $$mcp 2>/dev/null; do sleep 1; done; \
	echo "error: authserver or the calendar server stopped (see above)" >&2; exit 1

# The official MCP TypeScript SDK for tests/test_mcp_ts_sdk_e2e.py, exactly as pinned in its package-lock.json
# (from the npm registry only). Without npm that test is skipped, except in CI where it fails.
TS_INTEROP := tests/interop_ts
$(TS_INTEROP)/node_modules/.package-lock.json: $(TS_INTEROP)/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "npm not found: skipping $(TS_INTEROP)"; exit 0; }; \
	npm ci --prefix $(TS_INTEROP) --no-audit --no-fund

# The suite runs on TEST_WORKERS processes (pytest-xdist); every test has its own databases. A module
# marked `xdist_group` (tests/test_scale_out.py: three servers per module) is meant to stay on one
# worker; with pytest 9.2 and xdist 3.8 it does not yet (pytest-xdist issue 1386), which costs time only.
TEST_WORKERS ?= 2
test: $(VENV)/.test-deps chromium $(TS_INTEROP)/node_modules/.package-lock.json
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup --durations=15

# The load generator of the benchmark: Debian's wrk, installed when missing (like chromium above).
.PHONY: wrk
wrk:
	@command -v wrk >/dev/null 2>&1 || { \
	  echo "installing Debian's wrk for the benchmark"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }

# The performance budgets of issue 9 against a real `authserver serve`, on throw-away SQLite and
# PostgreSQL databases; not part of `make test`. Arguments go through BENCH_ARGS (or ARGS), e.g.
# make bench ARGS="--quick --database sqlite"; every option: .venv/bin/python bench/bench.py --help.
BENCH_ARGS ?= $(ARGS)
bench: $(VENV)/.bench-deps wrk
	$(BIN)/python bench/bench.py $(BENCH_ARGS)

# Page translations: extract the message ids (templates and N_() in code) and merge them into
# authserver/locale/*/LC_MESSAGES/messages.po; then translate the new entries (tests/test_i18n.py
# fails while one is missing). Catalogs are compiled in memory at start-up (authserver/web/i18n.py).
messages: $(VENV)/.test-deps
	$(BIN)/pybabel extract -F babel.cfg -k N_ --no-location --sort-output -o $(VENV)/messages.pot .
	$(BIN)/pybabel update -i $(VENV)/messages.pot -d authserver/locale --no-fuzzy-matching --ignore-obsolete --ignore-pot-creation-date

# The README's pictures of the main pages (docs/screenshots/), taken in Debian's Chromium.
screenshots: $(VENV)/.test-deps chromium
	@fc-list :lang=ko 2>/dev/null | grep -q . || { \
	  echo "installing Debian's fonts-nanum so Korean pages render"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-nanum >/dev/null; }
	PYTHONPATH=. $(BIN)/python docs/screenshots.py

lint: $(VENV)/.test-deps
	$(BIN)/ruff check .
	$(BIN)/mypy

fmt: $(VENV)/.test-deps
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
