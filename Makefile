# The two commands of the README: `make demo` and `make test` (each sets up what it needs first).
.PHONY: setup setup-dev demo test test-slow lint bench mutation

setup:
	bash scripts/setup.sh

setup-dev:
	bash scripts/setup.sh --dev

demo: setup
	.venv/bin/robustlab demo

test: setup-dev
	bash scripts/test.sh

test-slow: setup-dev
	bash scripts/test.sh -m slow

lint:
	.venv/bin/ruff check src tests benchmarks && .venv/bin/ruff format --check src tests benchmarks

bench: setup-dev
	.venv/bin/python benchmarks/runner_overhead.py

# mutation testing of the numeric core (scripts/mutation.py; counts and survivors: docs/testing.md)
mutation: setup-dev
	.venv/bin/python scripts/mutation.py --jobs 2
