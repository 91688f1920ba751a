# agentca - the front door. `make run` and `make test` install what is missing, then build.
#
#   make run     build, create a CA under ./var on first use, serve it
#   make test    build and run the whole suite (ctest), then again under ASan+UBSan;
#                with CI=true also every fuzz target for CI_FUZZ_SECONDS (30) and a
#                CI_SOAK_SECONDS (30) soak
#   make asan    the suite under AddressSanitizer and UndefinedBehaviorSanitizer only
#   make bench   benchmarks (bench/), results to stdout; see BENCHMARKS.md
#   make fuzz    each libFuzzer target for FUZZ_SECONDS (default 60); FUZZ_TARGETS="fuzz_api ..."
#                runs only those
#   make soak    mixed traffic for SOAK_SECONDS (default 600), the daemon's RSS and fds
#   make crash   the SIGKILL crash-safety test with CRASH_KILLS kills (default 200)
#   make format  clang-format every C file in place

BUILD      ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60
# Under CI=true `make test` also runs every fuzz target this long (the hardening floor).
CI_FUZZ_SECONDS ?= 30
CI_SOAK_SECONDS ?= 30
SOAK_SECONDS ?= 600
CRASH_KILLS ?= 200
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
VAR        ?= var

# Debian packages the build, the tests and the benchmarks use.
BUILD_PKGS = build-essential cmake pkg-config libssl-dev libsqlite3-dev libjansson-dev \
             libjwt-dev libmicrohttpd-dev libcurl4-openssl-dev openssl
# sqlite3: tests/integration/test_audit_proofs.sh tampers with the database through its shell.
TEST_PKGS  = $(BUILD_PKGS) libcmocka-dev clang libclang-rt-14-dev curl procps sqlite3
# testssl.sh: tests/integration/test_tls_config.sh scans the TLS ports.
TEST_PKGS += testssl.sh
# jq: tests/integration/test_ocsp.sh reads the revocation feed's JSON.
TEST_PKGS += jq
# pebble: tests/unit/test_acme_validate.c checks challenges against pebble-challtestsrv.
# lego, certbot: the ACME integration tests drive them (python3 comes with certbot).
TEST_PKGS += pebble lego certbot
# socat: tests/integration/test_proxy_engine.sh half-closes a TLS session through the proxy.
TEST_PKGS += socat
# bench/enroll runs cfssl next to the daemon, finds cfssl's port with ss and makes cfssl's
# certificate database with sqlite3; bench/audit
# measures peak RSS with GNU time; bench/acme runs lego against agentca and Pebble;
# bench/proxy runs HAProxy and stunnel next to the proxy.
BENCH_PKGS = $(BUILD_PKGS) golang-cfssl iproute2 time pebble lego curl haproxy stunnel4 sqlite3
SUDO = $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all build run test asan bench fuzz soak crash format deps-build deps-test deps-bench clean

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
ifeq ($(CI),true)
	$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=$(CI_FUZZ_SECONDS)
	./bench/soak/run.sh $(BUILD) $(CI_SOAK_SECONDS) 5
endif

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
	./bench/acme/run.sh $(BUILD)
	./bench/proxy/run.sh $(BUILD)
	./bench/renewal-storm/run.sh $(BUILD)

fuzz: deps-test
	cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang \
	      -DAGENTCA_FUZZ=ON >/dev/null
	cmake --build $(FUZZ_BUILD) -j $(JOBS)
	./fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(JOBS) $(FUZZ_TARGETS)

soak: build
	./bench/soak/run.sh $(BUILD) $(SOAK_SECONDS) 10

crash: deps-test build
	CRASH_KILLS=$(CRASH_KILLS) AGENTCA=$(BUILD)/agentca MKCSR=$(BUILD)/tests/mkcsr \
	      SRCDIR=$(CURDIR) bash tests/integration/test_crash.sh

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
