# dbward developer commands. Every target installs what it needs itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Local services used by the integration suite (see README "Tests").
export DBWARD_TEST_POSTGRES_URL ?= postgresql://postgres@127.0.0.1:5432/test
export DBWARD_TEST_MYSQL_URL ?= mysql://root@127.0.0.1:3306/test
# Bytecode is cached: the suite starts hundreds of `dbward` processes, which otherwise
# compile every module of the project again at each start.
unexport PYTHONDONTWRITEBYTECODE
# Worker processes for the suite (pytest-xdist).
TEST_WORKERS ?= 3

.PHONY: setup run test unit lint coverage bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: setup
	$(BIN)/dbward dev --demo

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy --strict src
	$(BIN)/lint-imports

unit: setup
	$(BIN)/pytest tests/unit -q

test: setup lint
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist worksteal

# The same suite with line and branch coverage (slower: tracing roughly doubles in-process time).
coverage: setup
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist worksteal --cov --cov-report=term:skip-covered

bench: setup
	@echo "benchmarks: bench/ (each prints a ratio against a baseline measured in the same run)"
	@for f in bench/[!_]*.py; do [ -e "$$f" ] || continue; echo "== $$f"; $(BIN)/python "$$f" || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage htmlcov
