# selectorkv: `make serve` and `make test` set everything up on a fresh machine.
#
# The virtual environment lives in .venv/ inside the checkout. Each target
# depends on a stamp file that records which extras were installed, so the
# first run installs and later runs start at once (until setup.cfg changes).
# Another interpreter gets a venv of its own:
#     make test PYTHON=python3.13 VENV=.venv-3.13

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: serve load test test-system test-fast test-stress test-reliability test-faults lint bench bench-compare report report-cluster scale hop calibrate tutorial peers builds instructions cluster clean

# make bench-compare fails when a benchmark's median is this much slower than
# in the last saved run (the machine's run-to-run noise is 10-20 %).
BENCH_THRESHOLD ?= 30%
BENCH_COLUMNS := --benchmark-columns=min,median,mean,ops,rounds

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The server alone: h11 and rocksdict.
$(VENV)/.installed-base: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

# The server and selectorkv load (the "load" extra: hdrhistogram).
$(VENV)/.installed-load: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[load]'
	touch $@ $(VENV)/.installed-base

# Tests, linters and the compiled h11 (the "fast" extra, opt-in) on top.
$(VENV)/.installed-dev: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test,lint,fast,lab]'
	touch $@ $(VENV)/.installed-base $(VENV)/.installed-load

# The peers of benchmarks/peers.py (uvicorn, httptools, uvloop, gunicorn).
$(VENV)/.installed-peers: setup.cfg pyproject.toml | $(VENV)/.installed-dev
	$(BIN)/python -m pip install -q -e '.[test,lint,fast,lab,peers]'
	touch $@

serve: $(VENV)/.installed-base
	$(BIN)/selectorkv serve --data ./data $(ARGS)

# Constant-rate load against a server (http://127.0.0.1:8080 unless --url):
# `make load ARGS="--workload put --rate 5000"`; `selectorkv load --help`.
load: $(VENV)/.installed-load
	$(BIN)/selectorkv load $(ARGS)

# Every behaviour, in under four minutes: the unit tests (tests/unit/, no
# sockets), the integration tests (tests/integration/, a server in-process or
# in one child process) and the system tests (tests/system/: clusters, wrk,
# the tutorial), all but the studies' end-to-end runs.
test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -m "not reliability and not study" $(ARGS)

# The studies' end-to-end runs that make test leaves out (marked "study"): the
# lab and the cluster study with --quick, and short fault runs. About five
# minutes; CI runs them after make test.
test-system: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -m "study and not reliability" $(ARGS)

# The same suite with the opt-in compiled parser (see selectorkv/http/parser.py).
test-fast: $(VENV)/.installed-dev
	SELECTORKV_HTTP_PARSER=h11-mypyc $(BIN)/python -m pytest -m "not reliability and not study" $(ARGS)

# The tests whose verdict waits on timers, rates or other threads (marked
# "timing"), the whole set STRESS_COUNT times in a row: the proof that the
# suite does not depend on this machine's speed. No retries: one failure fails.
STRESS_COUNT ?= 20
test-stress: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -m "timing and not reliability" --count $(STRESS_COUNT) \
		--repeat-scope session -p no:cacheprovider $(ARGS)

# The long and heavy reliability cases (docs/reliability.md); not run by CI.
test-reliability: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -m reliability --timeout=600 $(ARGS)

# The fault runs (selectorkv lab --faults, docs/cluster.md "Faults"): a
# 3-node cluster under kill -9, SIGSTOP and partitions (iptables: root),
# its history checked; a minute of faults per peer-call kind, about three
# minutes in all. Writes reports/faults/faults.md.
test-faults: $(VENV)/.installed-dev
	$(BIN)/selectorkv lab --faults $(ARGS)

# Microbenchmarks (benchmarks/, pytest-benchmark); each run is saved in .benchmarks/.
bench: $(VENV)/.installed-dev
	$(BIN)/python -m pytest benchmarks $(BENCH_COLUMNS) --benchmark-autosave $(ARGS)

# Runs them again and compares with the last saved run; fails on a regression.
bench-compare: $(VENV)/.installed-dev
	$(BIN)/python -m pytest benchmarks $(BENCH_COLUMNS) --benchmark-compare \
		--benchmark-compare-fail=median:$(BENCH_THRESHOLD) $(ARGS)

# The study (selectorkv lab): about 30 minutes; `make report ARGS=--quick` for
# a few. Writes reports/latest/report.md with plots, data and profiles.
report: $(VENV)/.installed-dev
	$(BIN)/selectorkv lab --out reports/latest $(ARGS)

# The load tools against a server of known latency (selectorkv lab --calibrate):
# each tool's bias at p50/p99/p99.9; about 15 minutes with wrk2 (WRK2=path if
# it is not on PATH), ARGS=--quick for one. Writes reports/calibration/calibration.md.
calibrate: $(VENV)/.installed-dev
	$(BIN)/selectorkv lab --calibrate --out reports/calibration $(ARGS)

# The tutorial's figures (docs/tutorial/): every step under the same load,
# idle and slow clients, the parsers' answers. About seven minutes; needs wrk.
tutorial: $(VENV)/.installed-dev
	$(BIN)/python -m docs.tutorial.measure $(ARGS)

# The cluster study (selectorkv lab --cluster 3): blocking against asynchronous
# peer calls, healthy and with a node down; about 35 minutes on 2 cores,
# `make report-cluster ARGS=--quick` for a few. Writes reports/cluster/report-cluster.md.
report-cluster: $(VENV)/.installed-dev
	$(BIN)/selectorkv lab --cluster 3 --out reports/cluster $(ARGS)

# selectorkv beside uvicorn and gunicorn, all up at once, in interleaved
# rounds (about 8 minutes; ARGS="--rounds 3 --seconds 5" for less).
peers: $(VENV)/.installed-peers
	$(BIN)/python -m benchmarks.peers $(ARGS)

# This checkout against an earlier commit (BASE, default HEAD~1), both modes,
# all up at once, in six interleaved rounds (about 7 minutes).
BASE ?= HEAD~1
builds: $(VENV)/.installed-dev
	$(BIN)/python -m benchmarks.builds --base $(BASE) $(ARGS)

# The same comparison by the instructions a request costs (valgrind's
# callgrind), which do not drift with the machine: about 2 minutes.
instructions: $(VENV)/.installed-dev
	$(BIN)/python -m benchmarks.instructions --base $(BASE) $(ARGS)

# The scale-out study (selectorkv lab --scale-out): 1, 2 and 4 nodes, each
# limited to the same share of one CPU (cgroup quota: root), placement-aware
# against round-robin routing. About 10 minutes; `make scale ARGS=--quick` for
# two. On a machine with more cores, `make scale ARGS="--scale-out 1,2,4,8
# --quota none"` gives each node a real CPU. Writes reports/scale/report-scale.md.
scale: $(VENV)/.installed-dev
	$(BIN)/selectorkv lab --scale-out --out reports/scale $(ARGS)

# What a hop costs (benchmarks/hop.py): the server CPU per request of one
# node, a 3-node cluster's local and proxied 1/1 requests, and 2 of 3, in
# interleaved rounds; `make hop ARGS="--base REV"` runs an earlier commit beside.
hop: $(VENV)/.installed-dev
	$(BIN)/python -m benchmarks.hop $(ARGS)

# A local cluster of three nodes on ports 8080-8082 (docs/cluster.md); elsewhere:
# `make cluster ARGS="--base-port 9000"` (ports 9000-9002); other flags in ARGS
# go to every node (`selectorkv cluster --help`).
cluster: $(VENV)/.installed-base
	$(BIN)/selectorkv cluster --nodes 3 $(ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check selectorkv tests benchmarks docs/tutorial
	$(BIN)/ruff format --check selectorkv tests benchmarks docs/tutorial
	$(BIN)/mypy selectorkv docs/tutorial

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .benchmarks *.egg-info data-lab data-lab-cluster data-cluster
