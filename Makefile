# Thin wrapper over CMake + CTest. Every target first makes sure the Debian
# packages are there (scripts/deps.sh installs them as root, else prints the
# command).
#   make          build build/orchard (Release)
#   make test     the whole suite: Release build, then an ASan+UBSan build,
#                 then a short libFuzzer run of every parser fuzzer
#   make run      the main job: fetch the corpus, train a tokenizer and a small
#                 LM for a few minutes, print its validation loss and a sample
#   make bench    the benchmarks (bench/), each compared with its peer
#                 (LLAMA_BENCH=/path/to/llama-bench for the llama.cpp columns)
JOBS ?= $(shell nproc)
FUZZ_SECONDS ?= 20
LLAMA_BENCH ?=
CMAKE_FLAGS ?=

.PHONY: all build run test test-release test-asan test-fuzz bench clean deps deps-test

all: build

deps:
	@scripts/deps.sh build

deps-test:
	@scripts/deps.sh test

build: deps
	cmake -S . -B build -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)
	cmake --build build -j$(JOBS)

test: deps-test test-release test-asan test-fuzz
	@echo "make test: all passed"

test-release: build
	ctest --test-dir build -j$(JOBS) --output-on-failure

test-asan: deps-test
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DORCHARD_SANITIZE=ON $(CMAKE_FLAGS)
	cmake --build build-asan -j$(JOBS)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --test-dir build-asan -j$(JOBS) --output-on-failure

test-fuzz: deps-test
	CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DORCHARD_FUZZ=ON $(CMAKE_FLAGS)
	cmake --build build-fuzz -j$(JOBS) --target fuzz_all
	scripts/run_fuzz.sh build-fuzz $(FUZZ_SECONDS)

run: build
	scripts/run.sh build/orchard

bench: build
	LLAMA_BENCH="$(LLAMA_BENCH)" scripts/run_bench.sh build

clean:
	rm -rf build build-asan build-fuzz
