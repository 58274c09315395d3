# condor_plugins — the two commands: `make demo` and `make test`.
# Both run inside dev/sandbox (Debian trixie + HTCondor) unless HTCondor and its
# Python bindings are already installed here and you are not root.

SANDBOX      := dev/sandbox
PYTEST_ARGS  ?=
# Test processes (pytest-xdist); the tests mostly wait on daemons. 0: serial.
TEST_JOBS    ?= 3
XDIST        := $(if $(filter 0,$(TEST_JOBS)),,-n $(TEST_JOBS) --dist loadgroup)
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
	$(RUN) python3 -m pytest -p no:cacheprovider $(XDIST) $(PYTEST_ARGS)

demo: sandbox
	$(RUN) python3 -m condor_plugins.demo --jobs $(JOBS) --max-nodes $(MAX_NODES)

bench: sandbox
	$(RUN) python3 bench/run_all.py

shell: sandbox
	$(SANDBOX) shell

clean:
	rm -rf build dist *.egg-info .pytest_cache

# `make rpm`: dist/condor-cloud-plugins-<version>-1.noarch.rpm. The sources are
# `git archive HEAD` (committed files only; the work tree when this is not a git
# checkout), archived here; rpmbuild runs in the sandbox (or natively, as above).
# Needs only the sandbox's rpmbuild, not the editable install of `make sandbox`.
ifeq ($(NATIVE),yes)
  RPM_PREPARE := true
  RPM_RUN :=
else
  RPM_PREPARE := $(SANDBOX) create
  RPM_RUN := $(SANDBOX) run --root --
endif
RPM_SDIST := dist/condor-cloud-plugins-sources.tar.gz

.PHONY: rpm
rpm:
	@$(RPM_PREPARE)
	packaging/rpm/build-rpm --sdist $(RPM_SDIST)
	$(RPM_RUN) packaging/rpm/build-rpm --tarball $(RPM_SDIST) --outdir dist
