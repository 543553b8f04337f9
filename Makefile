# dood-airflow: the two commands a new user needs are `make demo` and `make test`.
# Both set up everything themselves: virtualenv, Docker engine, images built locally.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test check unit integration e2e venv docker chromium redis images images-test bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "setup: installing dood-airflow and Airflow into $(VENV) (about a minute the first time)"
	@$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	@touch $@

venv: $(STAMP)

docker:
	@bash scripts/ensure-docker.sh

chromium:
	@bash scripts/ensure-chromium.sh

redis:
	@bash scripts/ensure-redis.sh

images-test: docker
	@bash scripts/build-images.sh test

images: docker
	@bash scripts/build-images.sh all

## make test: unit tests, integration tests on the real Docker engine and a real Airflow, and beside them the
## docker-compose stack end to end (Airflow in containers launching the steps through the host socket):
## scripts/test-all.sh. pytest runs in DOOD_TEST_WORKERS (default 2) pytest-xdist workers, then the `serial` tests
## alone (tests/conftest.py says which run beside which; DOOD_TEST_WORKERS=1: one process). DOOD_E2E_BESIDE=0: the
## e2e after pytest instead of beside it.
export DOOD_TEST_WORKERS DOOD_E2E_BESIDE
test: venv images chromium redis
	@bash scripts/test-all.sh

## make check: lint, formatting, types and the unit tests, in about a minute; CI runs it before `make test`.
## As a pre-commit hook: ln -s ../../scripts/pre-commit .git/hooks/pre-commit
check: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest tests/unit -q -p no:cacheprovider

unit: venv
	$(BIN)/python -m pytest tests/unit

integration: venv images redis
	$(BIN)/python -m pytest tests/integration

## make e2e: docker-compose.yml brought up, a REST-triggered run, a backfill, torn down (DOOD_E2E_EXECUTOR=celery).
e2e: venv images
	@bash scripts/compose-e2e.sh

## make demo: run the retraining pipeline end to end through Airflow.
demo: venv images
	@bash scripts/demo.sh

bench: venv images-test
	@bash benchmarks/run.sh

clean:
	rm -rf $(VENV) .pytest_cache var
