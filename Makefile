# edged — the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: all venv mosquitto lint format test conformance demo bench bench-quick clean install uninstall

all: test

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# The tests and the demo need a real MQTT broker; install it when missing and we are root.
mosquitto:
	@if command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing mosquitto (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; \
	else \
		echo "mosquitto is missing: run 'sudo apt-get install mosquitto' (or make test as root)" >&2; exit 1; \
	fi

lint: venv
	$(BIN)/ruff check edged drivers tests bench tools
	$(BIN)/ruff format --check edged drivers tests bench tools
	$(BIN)/mypy
	$(BIN)/lint-imports

format: venv
	$(BIN)/ruff format edged drivers tests bench tools
	$(BIN)/ruff check --fix edged drivers tests bench tools

test: venv mosquitto lint conformance check-unit
	$(BIN)/pytest -q -p no:cacheprovider $(PYTEST_ARGS)

conformance: venv
	$(BIN)/pytest -q -p no:cacheprovider tests/drivers/mbus/test_conformance.py

demo: venv mosquitto
	$(BIN)/python -m edged.demo

bench: venv mosquitto
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis

-include mk/install.mk
-include mk/deb.mk
