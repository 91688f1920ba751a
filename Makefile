# agentca - the front door. `make run` and `make test` install what is missing, then build.
#
#   make run     build, create a CA under ./var on first use, serve it
#   make test    build and run the whole suite (ctest), then again under ASan+UBSan
#   make asan    the suite under AddressSanitizer and UndefinedBehaviorSanitizer only
#   make bench   benchmarks (bench/), results to stdout; see BENCHMARKS.md
#   make fuzz    each libFuzzer target for FUZZ_SECONDS (default 60)
#   make format  clang-format every C file in place

BUILD      ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
VAR        ?= var

# Debian packages the build, the tests and the benchmarks use.
BUILD_PKGS = build-essential cmake pkg-config libssl-dev libsqlite3-dev libjansson-dev \
             libjwt-dev libmicrohttpd-dev libcurl4-openssl-dev openssl
# sqlite3: tests/integration/test_audit_proofs.sh tampers with the database through its shell.
TEST_PKGS  = $(BUILD_PKGS) libcmocka-dev clang libclang-rt-14-dev curl procps sqlite3
# bench/enroll runs cfssl next to the daemon, finds cfssl's port with ss and makes cfssl's
# certificate database with sqlite3; bench/audit measures peak RSS with GNU time.
BENCH_PKGS = $(BUILD_PKGS) golang-cfssl iproute2 time sqlite3
SUDO = $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all build run test asan bench fuzz format deps-build deps-test deps-bench clean

all: build

deps-build:
	@./scripts/install-deps.sh $(BUILD_PKGS)

deps-test:
	@./scripts/install-deps.sh $(TEST_PKGS)

deps-bench:
	@./scripts/install-deps.sh $(BENCH_PKGS)

$(BUILD)/Makefile: CMakeLists.txt
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo

build: deps-build
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build $(BUILD) -j $(JOBS)

run: build
	@./scripts/run-local.sh $(BUILD)/agentca $(VAR)

test: deps-test
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build $(BUILD) -j $(JOBS)
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	$(MAKE) --no-print-directory asan

asan: deps-test
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang \
	      -DAGENTCA_SANITIZE=ON >/dev/null
	cmake --build $(ASAN_BUILD) -j $(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	      UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j $(JOBS)

bench: build deps-bench
	./bench/issue/run.sh $(BUILD)
	./bench/enroll/run.sh $(BUILD)
	./bench/audit/run.sh $(BUILD)

fuzz: deps-test
	cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang \
	      -DAGENTCA_FUZZ=ON >/dev/null
	cmake --build $(FUZZ_BUILD) -j $(JOBS)
	./fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
