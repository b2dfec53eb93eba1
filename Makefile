# minituner: the two commands a fresh clone needs are `make status` and `make check`.
# Both create .venv first when it is missing (pinned CPU PyTorch, see requirements.txt).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
LAB    ?=

.DEFAULT_GOAL := help
.PHONY: help venv dev status test check stubs grade gradescope bench experiment clean-venv

help:
	@echo "make status          where you are, and what to do next (sets up .venv first)"
	@echo "make test LAB=lab00  run one lab's tests against your code"
	@echo "make check           every self-check of the course (maintainers, CI)"
	@echo "make stubs           regenerate src/minituner stubs from solutions/ (FORCE=1 to overwrite edits)"
	@echo "make gradescope      build the Gradescope autograder zip (dist/gradescope-autograder.zip)"
	@echo "make bench           run benchmarks/ and write benchmarks/RESULTS.md (maintainers)"
	@echo "make experiment LAB=lab05  run a lab's experiment on your code (writes experiments/NN-slug/)"

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "minituner needs Python >= 3.11; set PYTHON=python3.11")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

# Course-development dependencies (peft, for the cross-checks and benchmarks): for `check` and
# `bench` only, never for the learner's `status` and `test`.
dev: $(DEV_STAMP)

$(DEV_STAMP): $(STAMP) requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $(DEV_STAMP)

status: $(STAMP)
	@$(PY) -m labkit status

test: $(STAMP)
	@test -n "$(LAB)" || { echo "usage: make test LAB=lab00   (labs: make status)"; exit 2; }
	$(PY) -m pytest -m $(LAB) --tb=short

stubs: $(STAMP)
	$(PY) -m labkit stubs $(if $(FORCE),--force,)

check: $(STAMP) $(DEV_STAMP)
	$(PY) -m labkit check

# The zip Gradescope takes: setup.sh, run_autograder, the tests, labkit and the given code, never
# solutions/ (docs/grading.md).
gradescope: $(STAMP)
	$(PY) -m labkit gradescope-build --out dist/gradescope-autograder.zip

bench: $(STAMP) $(DEV_STAMP)
	$(PY) benchmarks/run_all.py

# A lab's experiment runs the learner's code: `make experiment LAB=lab05` is
# `python -m minituner.lab05_experiment`.
experiment: $(STAMP)
	@test -n "$(LAB)" || { echo "usage: make experiment LAB=lab05"; exit 2; }
	@test -f src/minituner/$(LAB)_experiment.py || { echo "$(LAB) has no experiment (src/minituner/$(LAB)_experiment.py)"; exit 2; }
	$(PY) -m minituner.$(LAB)_experiment

clean-venv:
	rm -rf $(VENV)
