# condor_plugins — the two commands: `make demo` and `make test`.
# Both run inside dev/sandbox (Debian trixie + HTCondor) unless HTCondor and its
# Python bindings are already installed here and you are not root.

SANDBOX      := dev/sandbox
PYTEST_ARGS  ?=
JOBS         ?= 20
MAX_NODES    ?= 3
NATIVE       := $(shell command -v condor_master >/dev/null 2>&1 && python3 -c 'import htcondor2' 2>/dev/null && [ "$$(id -u)" != 0 ] && echo yes)

ifeq ($(NATIVE),yes)
  RUN := env PYTHONPATH=$(CURDIR)
  PREPARE := true
else
  RUN := $(SANDBOX) run --
  PREPARE := $(SANDBOX) create && $(SANDBOX) run --root -- pip install -q --no-deps --no-build-isolation --config-settings editable_mode=compat -e $(CURDIR)
endif

.PHONY: test demo sandbox bench clean shell

sandbox:
	@$(PREPARE)

test: sandbox
	$(RUN) python3 -m pytest -p no:cacheprovider $(PYTEST_ARGS)

demo: sandbox
	$(RUN) python3 -m condor_plugins.demo --jobs $(JOBS) --max-nodes $(MAX_NODES)

bench: sandbox
	$(RUN) python3 bench/run_all.py

shell: sandbox
	$(SANDBOX) shell

clean:
	rm -rf build dist *.egg-info .pytest_cache
