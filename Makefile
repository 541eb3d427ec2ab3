# tenantry — `make demo` runs the main job end to end, `make test` runs lint and the suite.
# Both create .venv and install the project on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install browser demo test test-unit test-integration bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip >/dev/null
	$(BIN)/pip install -e '.[dev]'
	touch $(STAMP)

demo: install
	$(BIN)/tenantry demo

# Headless Chromium + ChromeDriver (Debian) for the console's browser tests; installed
# only when missing and we are root, else those tests skip saying why.
browser:
	@if { [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; } && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			chromium chromium-driver >/dev/null; \
	fi

test: install browser lint
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/unit
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/integration

test-unit: install
	$(BIN)/python -m pytest -q tests/unit

test-integration: install
	$(BIN)/python -m pytest -q tests/integration

# ruff and mypy (settings in pyproject.toml); `make test` runs it first.
lint: install
	$(BIN)/ruff check engine training registry tests benchmarks
	$(BIN)/mypy engine training registry

clean:
	rm -rf $(VENV) tenantry-data .pytest_cache
