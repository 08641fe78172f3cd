# The two quick-start commands: `make run` (the whole default workflow) and `make test`.
# Both create .venv and install the pinned dependencies on first use; `make test` lints first.

VENV := .venv
INSTALLED := $(VENV)/.installed
SNAKEMAKE := $(VENV)/bin/snakemake
CORES ?= all

.PHONY: run test lint report dry-run clean

$(INSTALLED): pyproject.toml envs/slurm-plugin.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	$(VENV)/bin/pip install --quiet --no-deps -r envs/slurm-plugin.txt
	touch $@

run: $(INSTALLED)
	$(SNAKEMAKE) --cores $(CORES) --resources gpu=1
	$(SNAKEMAKE) --report results/report.html

test: lint
	$(VENV)/bin/pytest -n 2 --dist loadfile --durations=15

# Settings in pyproject.toml ([tool.ruff], [tool.snakefmt]); fix with `ruff check --fix`,
# `ruff format` and `snakefmt Snakefile workflow`. The workflow is linted twice: the tiny
# config turns on cross-validation, whose rules the default leaves out.
lint: $(INSTALLED)
	$(VENV)/bin/ruff check
	$(VENV)/bin/ruff format --check
	$(VENV)/bin/snakefmt --check Snakefile workflow
	$(SNAKEMAKE) --lint
	$(SNAKEMAKE) --lint --configfile config/tiny.yaml

dry-run: $(INSTALLED)
	$(SNAKEMAKE) -n --quiet rules

clean:
	rm -rf results
