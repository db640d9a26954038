# Quick start:  make demo   (set up, then map the built-in synthetic scene)
#               make test   (set up, then run the whole test suite)
VENV ?= .venv
PY := $(VENV)/bin/python
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup test demo clean
setup:
	@bash scripts/setup.sh

test: setup
	$(PY) -m pytest -q tests

demo: setup
	$(VENV)/bin/neural-mapping demo --out outputs/demo

clean:
	rm -rf $(VENV) outputs build *.egg-info
