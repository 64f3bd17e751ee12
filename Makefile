# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test lint format clean bench

# What running needs (make run), and what the tests need on top (make test).
$(BIN)/codeb-installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[mcp]'
	touch $@

$(BIN)/codeb-test-installed: $(BIN)/codeb-installed
	$(BIN)/pip install --quiet -e '.[test,mcp]'
	touch $@

# Serve the API on 127.0.0.1:8080 (state in ./var unless CODEB_DATA_DIR says otherwise).
run: $(BIN)/codeb-installed
	$(BIN)/codeb serve

# Install what the tests need (Debian packages included), lint, then run the whole suite.
test: $(BIN)/codeb-test-installed
	bash scripts/install-test-deps.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/ansible-lint
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(BIN)/codeb-test-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/ansible-lint

format: $(BIN)/codeb-test-installed
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(BIN)/codeb-test-installed
	$(BIN)/python bench/projects_throughput.py

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
