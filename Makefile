# The README's two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo

.PHONY: test demo lint format clean-venv gpu-wheels

# Re-install only when a requirements file or pyproject changes.
$(STAMP): requirements.txt requirements-demo.txt requirements-test.txt requirements-beam.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.txt -r requirements-demo.txt -r requirements-test.txt -r requirements-beam.txt
	# openflam 1.0.2 pins torch<2.8 and numpy<2, which are stale: it runs with the
	# pinned torch and numpy above, so install it without its declared dependencies.
	$(PIP) install -q --no-deps openflam==1.0.2
	# datasets 4.8.5 (test fixtures only) pins fsspec<=2026.2.0; gcsfs needs a newer one.
	$(PIP) install -q --no-deps datasets==4.8.5
	# laion_clap 1.1.7 (the CLAP converter's test oracle) pins numpy<2: stale in the same way.
	$(PIP) install -q --no-deps laion_clap==1.1.7
	$(PIP) install -q --no-deps -e .
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Test processes (pytest-xdist); a file's tests stay in one process, so module fixtures
# (the tiny demo, built datasets) are made once. TEST_WORKERS=0 runs in this process.
TEST_WORKERS ?= 2

test: lint
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# The demo needs the runtime stack and MiniLM only (no torch, no test toolkits).
$(DEMO_STAMP): requirements.txt requirements-demo.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.txt -r requirements-demo.txt
	$(PIP) install -q --no-deps -e .
	touch $(DEMO_STAMP)

# DEMO_ARGS, e.g. --synthetic or --workdir=runs/other (python -m demo --help).
demo: $(DEMO_STAMP)
	$(PY) -m demo $(DEMO_ARGS)

clean-venv:
	rm -rf $(VENV)

# The cp312 wheels the GPU image lacks (requirements-gpu.txt), for benchmarks/gpu_check.sh:
# the device run carries gpu_wheels/ and installs them there without an index.
GPU_WHEELS := gpu_wheels
GPU_PLATFORMS := $(foreach n,2_28 2_27 2_24 2_17,--platform manylinux_$(n)_x86_64) --platform manylinux2014_x86_64

gpu-wheels: requirements-gpu.txt
	mkdir -p $(GPU_WHEELS)
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --no-binary=promise --python-version 3.12 \
		--implementation cp $(GPU_PLATFORMS) -d $(GPU_WHEELS) -r requirements-gpu.txt
	# promise publishes a source archive only (pure Python): its wheel is built here.
	$(PYTHON) -m pip wheel -q --no-deps -w $(GPU_WHEELS) $(GPU_WHEELS)/promise-*.tar.gz
	rm -f $(GPU_WHEELS)/promise-*.tar.gz
	@ls $(GPU_WHEELS)/*.whl | wc -l | xargs echo "wheels:"; du -sh $(GPU_WHEELS)
