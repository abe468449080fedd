# Two commands do all the set-up on a fresh machine:
#   make run    install yurt into .venv and serve examples/echo.py::Echo on :8080
#   make test   install yurt and its test tools into .venv, then run tox (tests, lint, types)
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: run test clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	exec $(VENV)/bin/yurt run examples/echo.py::Echo

test: $(STAMP)
	$(VENV)/bin/tox run -e tests,lint,types

clean:
	rm -rf $(VENV) .tox
