# The README's two commands: `make demo` (install everything and run the main job) and `make test`.
VENV ?= .venv
export RAY_USAGE_STATS_ENABLED ?= 0
export RAY_AUTH_MODE ?= disabled

.PHONY: demo test test-all setup data browser

setup:
	@bash scripts/setup.sh

data:
	@bash scripts/get-data.sh

# Headless Chromium for the report's browser test (skipped, saying why, where it cannot be installed).
browser:
	@bash scripts/get-chromium.sh

demo: setup data
	$(VENV)/bin/nas search --target-ms 60

# Lint first (ruff, configured in pyproject.toml), then the tests (the slow ones are left out: `make
# test-all` runs them too), listing the 15 slowest. Exit status 5 (no tests collected) must fail, never
# pass silently.
test: setup data browser
	$(VENV)/bin/ruff check .
	@$(VENV)/bin/python -m pytest -q --durations=15; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: no tests were collected" >&2; exit 1; fi; exit $$rc

test-all: setup data browser
	$(VENV)/bin/python -m pytest -q --durations=15 -m "slow or not slow"
