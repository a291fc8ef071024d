# The two commands of README's set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
DURATION ?= 0
SPEC ?= streams/specs/card_fraud.yaml
# Drift on purpose in the demo: `make demo DRIFT="amount=x3"` (space-separated FIELD=CHANGE,
# see `streamscore demo --help`) shifts those fields DRIFT_AFTER seconds in.
DRIFT ?=
DRIFT_AFTER ?= 20
# One full action cycle in the demo: `make demo CYCLE=1 DURATION=150` also runs the controller
# (drift -> retrain from the stream -> challenger shadowed -> automatic promotion or refusal).
CYCLE ?=

.PHONY: demo test lint typecheck load faults clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,load,demo,health]"
	touch $(INSTALLED)

## Start embedded Kafka + Redis, materialize features, train if needed, run a worker and a producer.
demo: $(INSTALLED)
	$(BIN)/streamscore demo --spec $(SPEC) --duration $(DURATION) \
		$(if $(strip $(DRIFT)),--drift-after $(DRIFT_AFTER) $(foreach d,$(DRIFT),--drift $(d))) \
		$(if $(strip $(CYCLE)),--cycle)

## Lint, type-check, then run the whole test suite (unit + integration on embedded servers).
## Two pytest processes, each with its own broker and Redis, a test file in one of them:
## most integration time is waiting on workers and servers (10.8 min in one, 7 in two).
test: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -n 2 --dist loadfile

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(INSTALLED)
	$(BIN)/mypy

## The load test: pass-through ceiling vs naive per-event vs the real pipeline.
load: $(INSTALLED)
	$(BIN)/python -m load_tests.run

## The fault suite: kill -9, Redis outages, a broker restart, fuzzed input (minutes).
faults: $(INSTALLED)
	$(BIN)/python -m load_tests.faults

clean:
	rm -rf $(VENV) .streamscore .pytest_cache .mypy_cache .ruff_cache
