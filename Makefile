# Entry points a person types. `make run` and `make test` are all a fresh machine needs.
CARGO ?= cargo

.PHONY: run test deps lint fmt build release bench bench-quick bench-faas doc image

## The container image (Dockerfile): nmid, nmid-faas and nmidctl, non-root, ports 6808/6809.
## Override the tool or the tag: `make image DOCKER=podman IMAGE=registry/nmid:tag`.
DOCKER ?= docker
IMAGE ?= nmid:$(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)

## Start the dispatcher on 0.0.0.0:6808 with the embedded demo worker serving ToUpper.
run:
	$(CARGO) run --release --locked --bin nmid -- --demo

## Install what the tests need, check formatting and lints, then run every test.
test: deps lint
	$(CARGO) test --locked

## Install the system packages the build and the tests need (Debian; idempotent).
deps:
	./scripts/install-deps

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --locked --no-deps

fmt:
	$(CARGO) fmt --all

build:
	$(CARGO) build --locked

release:
	$(CARGO) build --locked --release

doc:
	$(CARGO) doc --no-deps

## Benchmark us against NATS request-reply, gearmand, the one-hop floor and HTTP, then the
## codec micro-benchmarks (about 16 minutes). Installs what it lacks (nats-server, gearmand,
## wrk); results in bench-results/<time>.json and .md. See BENCHMARKS.md.
bench:
	./scripts/bench-deps
	$(CARGO) build --locked --release --bin nmid
	ulimit -n "$$(ulimit -H -n)" 2>/dev/null || true; $(CARGO) bench --locked --bench compare
	$(CARGO) bench --locked --bench micro

## Under a minute once built: 64 calls in flight, 32 B, us vs NATS vs the floor. The last
## line printed is `ratio_vs_nats=<x> ratio_vs_floor=<y>`.
bench-quick:
	./scripts/bench-deps
	$(CARGO) build --locked --release --bin nmid
	$(CARGO) bench --locked --bench compare -- --quick

image:
	$(DOCKER) build -t $(IMAGE) .

## nmidctl bench against nmid-faas: an exec and an http function at 1-64 calls in flight, and
## the in-process demo worker for scale (about 2 minutes once built). BENCHMARKS.md has a run.
bench-faas:
	./scripts/bench-faas
