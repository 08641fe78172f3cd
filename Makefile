# The two quick-start commands: `make run` (the whole default workflow) and `make test`.
# Both create .venv and install the pinned dependencies on first use.

VENV := .venv
INSTALLED := $(VENV)/.installed
SNAKEMAKE := $(VENV)/bin/snakemake
CORES ?= all

.PHONY: run test report dry-run clean

$(INSTALLED): pyproject.toml envs/slurm-plugin.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	$(VENV)/bin/pip install --quiet --no-deps -r envs/slurm-plugin.txt
	touch $@

run: $(INSTALLED)
	$(SNAKEMAKE) --cores $(CORES) --resources gpu=1
	$(SNAKEMAKE) --report results/report.html

test: $(INSTALLED)
	$(VENV)/bin/pytest -n 2 --dist loadfile --durations=15

dry-run: $(INSTALLED)
	$(SNAKEMAKE) -n --quiet rules

clean:
	rm -rf results
