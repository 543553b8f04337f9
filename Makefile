# dood-airflow: the two commands a new user needs are `make demo` and `make test`.
# Both set up everything themselves: virtualenv, Docker engine, images built locally.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test unit integration venv docker images images-test bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "setup: installing dood-airflow and Airflow into $(VENV) (about a minute the first time)"
	@$(BIN)/pip install -q --disable-pip-version-check -e '.[test]'
	@touch $@

venv: $(STAMP)

docker:
	@bash scripts/ensure-docker.sh

images-test: docker
	@bash scripts/build-images.sh test

images: docker
	@bash scripts/build-images.sh all

## make test: unit tests, then integration tests on the real Docker engine and a real Airflow.
test: venv images
	$(BIN)/python -m pytest tests

unit: venv
	$(BIN)/python -m pytest tests/unit

integration: venv images
	$(BIN)/python -m pytest tests/integration

## make demo: run the retraining pipeline end to end through Airflow.
demo: venv images
	@bash scripts/demo.sh

bench: venv images-test
	@bash benchmarks/run.sh

clean:
	rm -rf $(VENV) .pytest_cache var
