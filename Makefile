# Entry points a person types. `make run` and `make test` are all a fresh machine needs.
CARGO ?= cargo

.PHONY: run test deps lint fmt build release bench doc

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

fmt:
	$(CARGO) fmt --all

build:
	$(CARGO) build --locked

release:
	$(CARGO) build --locked --release

doc:
	$(CARGO) doc --no-deps
