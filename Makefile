# The two commands the README promises: `make demo` (set up + index the sample catalog on embedded
# Milvus Lite + example searches) and `make test` (set up + the whole test suite).
VENV ?= .venv
PY := $(VENV)/bin/python
SHARED_DATA ?= ../shared/data

.PHONY: setup demo test browser-deps netns-deps eval bench faults clean

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first and exactly 2.13.0: the local CPU wheel (any other torch requirement pulls CUDA).
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

browser-deps:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
	  || echo "chromium could not be installed: the browser test will be skipped"

# The Milvus standalone test runs its server in a private network namespace: unshare (util-linux) and ip
# (iproute2), as root. Without them the test skips and says why.
netns-deps:
	@command -v ip >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq iproute2 >/dev/null) \
	  || echo "iproute2 could not be installed: the Milvus standalone test will be skipped"

demo: setup
	MMRAG_SHARED_DATA=$(SHARED_DATA) bash scripts/demo.sh

test: setup browser-deps netns-deps
	$(VENV)/bin/pytest -q

eval: setup
	MMRAG_SHARED_DATA=$(SHARED_DATA) $(VENV)/bin/mmrag eval

bench: setup
	$(PY) bench/clip_throughput.py && $(PY) bench/store_scale.py && $(PY) bench/search_cpu.py && $(PY) bench/ann_recall.py

faults: setup
	$(PY) bench/faults.py --out bench/results/faults.md

clean:
	rm -rf mmrag_data .cache .pytest_cache
