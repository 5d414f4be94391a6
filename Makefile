# The front door. On a fresh Debian 12 or 13 machine, as root:
#   make demo    the default experiment, ending in figures under results/
#   make test    unit tests (no root) and Mininet integration tests
VENV ?= .venv
PY := $(VENV)/bin/python
SPEC ?= experiments/specs/demo.toml

.DEFAULT_GOAL := demo
.PHONY: setup demo cli test unit bench reproduce reproduce-quick figures clean

setup:
	@bash scripts/setup-machine.sh

demo: setup
	@echo "make demo: FTP through 3 firewall nodes without sync, with on-demand sync, and with a crash; raw data, figures and SUMMARY.md go to results/"
	@$(VENV)/bin/fwcluster run $(SPEC)

# The interactive cluster for labs (docs/labs/): NODES, SYNC, and any other
# fwcluster cli option in ARGS (e.g. ARGS="--capture sync --metrics-port 9810").
NODES ?= 3
NODE ?= python
SYNC ?= ondemand
cli: setup
	@$(VENV)/bin/fwcluster cli --nodes $(NODES) --node $(NODE) --sync $(SYNC) $(ARGS)

test: setup
	@echo "make test: unit tests, then integration tests under Mininet"
	@$(PY) -m pytest

unit: setup
	@$(PY) -m pytest tests/unit

bench: setup
	@echo "make bench: data-plane throughput through one node against kernel forwarding"
	@$(PY) -m experiments.bench $(BENCH)

# The reproduction suite (experiments/specs/reproduce/): every experiment, three
# seeded repetitions (e1k five), figures and results/reproduce/REPORT.md. SHARD=i/n runs
# one machine's share; resumes where it stopped.
SHARD ?= 1/1
reproduce: setup
	@$(VENV)/bin/fwcluster reproduce --shard $(SHARD)

reproduce-quick: setup
	@$(VENV)/bin/fwcluster reproduce --quick --shard $(SHARD)

# Every figure and report under results/, from raw data alone (no network).
figures: setup
	@$(VENV)/bin/fwcluster figures

clean:
	@$(VENV)/bin/fwcluster clean 2>/dev/null || mn -c >/dev/null 2>&1 || true
