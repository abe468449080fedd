# Two commands do all the set-up on a fresh machine:
#   make run    install yurt into .venv and serve APP on 127.0.0.1:PORT
#               (make run APP=app.py::App PORT=8000; default examples/echo.py::Echo on 8080)
#   make test   install yurt and its test tools into .venv, then run tox (tests, lint, types)
PYTHON ?= python3
APP ?= examples/echo.py::Echo
PORT ?= 8080
VENV := .venv
# Written last, once every install step has succeeded: a .venv without it is never used.
STAMP := $(VENV)/.installed

.PHONY: run test clean

# Checked before .venv is made, so an old or incomplete Python fails here with the fix, not
# half-way through an install. The checks avoid f-strings: they must run on any python3.
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { \
	  echo "make: $(PYTHON) not found; yurt needs Python 3.11 or newer (make PYTHON=/path/to/python3.11 ...)" >&2; \
	  exit 1; }
	@$(PYTHON) -c 'import sys; v = sys.version_info; sys.exit(0 if v >= (3, 11) else \
	  "make: yurt needs Python 3.11 or newer; $(PYTHON) is %d.%d.%d (%s).\nInstall 3.11+ and run make again with PYTHON=/path/to/python3.11" \
	  % (v[0], v[1], v[2], sys.executable))'
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || { \
	  echo "make: $(PYTHON) cannot make a virtual environment (no venv or ensurepip module)." >&2; \
	  echo "      On Debian or Ubuntu: apt install python3-venv (or python3.X-venv for your version)." >&2; \
	  exit 1; }
	@# A .venv without the stamp is a failed or interrupted install: start it again from nothing.
	rm -rf $(VENV)
	@trap 'rm -rf $(VENV); exit 130' INT TERM HUP; \
	set -e; \
	( set -ex; \
	  $(PYTHON) -m venv $(VENV); \
	  $(VENV)/bin/python -m pip install -q --upgrade pip; \
	  $(VENV)/bin/python -m pip install -q -e '.[dev]'; \
	) || { echo "make: installing into $(VENV) failed; removed it, run make again" >&2; \
	       rm -rf $(VENV); exit 1; }
	touch $(STAMP)

run: $(STAMP)
	exec $(VENV)/bin/yurt run '$(APP)' --port $(PORT)

test: $(STAMP)
	$(VENV)/bin/tox run -e tests,lint,types

clean:
	rm -rf $(VENV) .tox
