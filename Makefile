# Entry points a person types. `make run` and `make test` are all a fresh machine needs.
CARGO ?= cargo

.PHONY: run test test-light deps lint fmt build release bench bench-quick bench-jobs bench-faas doc image fuzz fuzz-check soak cluster-demo

## The container image (Dockerfile): nmid, nmid-faas and nmidctl, non-root, ports 6808/6809.
## Override the tool or the tag: `make image DOCKER=podman IMAGE=registry/nmid:tag`.
DOCKER ?= docker
IMAGE ?= nmid:$(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)

## Start the dispatcher on 0.0.0.0:6808 with the embedded demo worker serving ToUpper.
run: deps
	NMID__JOBS__DATA_DIR=target/nmid-data $(CARGO) run --release --locked --bin nmid -- --demo

## Install what the tests need, check formatting and lints and that the fuzz targets compile,
## then run every test of every package of the workspace (the dispatcher and the libraries
## under crates/, with their doc tests), then test-light.
test: deps lint fuzz-check
	$(CARGO) test --locked --workspace
	$(MAKE) test-light

## A program on the worker library alone builds with no protoc on PATH (its first run builds
## the worker's dependencies into target/light-build: about a minute).
test-light:
	$(CARGO) test --locked --test light_build

## The cluster walkthrough of docs/cluster.md: etcd, three dispatchers, a worker, calls
## through each, a discovering client, a SIGKILLed dispatcher leaving etcd (127.0.0.1 only).
## Installs only what it uses when missing: etcd, etcdctl, protoc, curl.
cluster-demo:
	./scripts/install-deps etcd etcdctl protoc curl
	./scripts/cluster-walkthrough

## Install the system packages the build and the tests need (Debian; idempotent: etcd,
## protoc for the etcd-client crate, Chromium and Prometheus for the tests).
deps:
	./scripts/install-deps

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --locked --workspace --no-deps

fmt:
	$(CARGO) fmt --all

build: deps
	$(CARGO) build --locked --workspace

release: deps
	$(CARGO) build --locked --release

doc:
	$(CARGO) doc --workspace --no-deps

## Benchmark us against NATS request-reply, gearmand, the one-hop floor, HTTP and the bare
## actix-web floor, then what [auth], [tls], and rate limits with breakers cost (us-tagged
## against itself with each on, 64 in flight, 32 B), then the codec micro-benchmarks (about
## 25 minutes), then the background-jobs and streaming benchmarks (bench-jobs). Installs
## what it lacks (nats-server, gearmand, wrk); results in bench-results/<time>.json and .md
## (bench-jobs: bench-results/jobs-<time>.*). See BENCHMARKS.md.
bench: deps
	./scripts/bench-deps
	$(CARGO) build --locked --release --bin nmid
	ulimit -n "$$(ulimit -H -n)" 2>/dev/null || true; $(CARGO) bench --locked --bench compare
	$(CARGO) bench --locked --bench compare -- \
		--systems us-tagged,us-tagged-auth,us-tagged-tls,us-tagged-guard \
		--levels 64 --payloads 32 --no-scale --no-cluster
	$(CARGO) bench --locked --bench micro
	$(CARGO) bench --locked --bench jobs

## Issue 23's benchmarks: durable background jobs (submissions/s, completions/s, submit
## p50/p99 of 20,000 jobs by 1, 8 and 64 submitters) of nmid (jobs.fsync always and
## interval) against gearmand's SQLite queue and NATS JetStream, and streaming partials/s to
## one caller against NATS multi-reply; results in bench-results/jobs-<time>.json and .md.
## `make bench-jobs JOBS_ARGS=--quick` for a short run. See BENCHMARKS.md.
JOBS_ARGS ?=
bench-jobs: deps
	./scripts/bench-deps
	$(CARGO) build --locked --release --bin nmid
	$(CARGO) bench --locked --bench jobs -- $(JOBS_ARGS)

## Under three minutes once built: 64 calls in flight, 32 B, us vs NATS vs the floor, and
## HTTP (wrk), in 3 rounds (each system once per round, in turn). Prints each round's ratios,
## and last the line `ratio_vs_nats=<x> ratio_vs_floor=<y> http_vs_tcp=<z> rounds=3`:
## us-tagged / nats, us-tagged / floor, http / us-tagged (throughputs), each the median of
## the rounds' ratios (one round moves ±20% from run to run on a shared 2-core machine).
bench-quick: deps
	./scripts/bench-deps
	$(CARGO) build --locked --release --bin nmid
	$(CARGO) bench --locked --bench compare -- --quick

## Fuzz for FUZZ_SECS seconds per target (default 60): the frame decoder, the tagged bodies,
## the HTTP params conversion and the config parser (cargo-fuzz, nightly; both installed if
## missing), seeded with nmid's golden vectors; then the live fuzzer against a running
## dispatcher for as long. Crashes are saved in fuzz/artifacts/<target>/.
FUZZ_SECS ?= 60
fuzz:
	rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
	cargo +nightly fuzz --version >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	./scripts/fuzz-corpus
	for target in frame_decoder tagged_bodies http_params config; do \
		cargo +nightly fuzz run --fuzz-dir fuzz $$target fuzz/corpus/$$target -- \
			-max_total_time=$(FUZZ_SECS) -print_final_stats=1 || exit 1; \
	done
	NMID_LIVE_FUZZ_SECS=$(FUZZ_SECS) $(CARGO) test --locked --release --test live_fuzz -- --nocapture

## The fuzz targets (fuzz/, a workspace of its own) still compile against the library:
## `cargo check` on the default (stable) toolchain, where libfuzzer-sys builds; only running
## them needs nightly (`make fuzz`). Into the main target/, reusing what `make lint` checked.
fuzz-check:
	$(CARGO) check --locked --manifest-path fuzz/Cargo.toml --target-dir target --bins

## 100,000 calls (SOAK_CALLS) through a real nmid while its workers are SIGKILLed and
## restarted at random and hostile peers press on it; prints lost / misrouted / duplicated
## (all must be 0), the errors (only WORKER_LOST, within a printed bound) and the
## dispatcher's peak RSS. `make test` runs 5,000.
SOAK_CALLS ?= 100000
soak:
	NMID_SOAK_CALLS=$(SOAK_CALLS) $(CARGO) test --locked --release --test soak -- --nocapture
image:
	$(DOCKER) build -t $(IMAGE) .

## nmidctl bench against nmid-faas: an exec and an http function at 1-64 calls in flight, and
## the in-process demo worker for scale (about 2 minutes once built). BENCHMARKS.md has a run.
bench-faas:
	./scripts/bench-faas
