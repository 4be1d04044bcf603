# The nmid image: the dispatcher (nmid), the FaaS runner and HTTP sidecar (nmid-faas) and the
# command-line tool (nmidctl). `make image` builds it; both bases can be overridden:
#   docker build --build-arg RUST_IMAGE=rust:1-bookworm --build-arg RUNTIME_IMAGE=debian:bookworm-slim .
# The test suite lints this file (hadolint), checks that the build stage installs the build's
# packages from scripts/build-packages (the list scripts/install-deps uses too), that the
# runtime stage installs scripts/runtime-packages, and that every binary copied below is
# built by the cargo command below (tests/deploy.rs).
ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# What cargo build needs beyond the toolchain (protoc for etcd-client): one shared list.
COPY scripts/build-packages /tmp/build-packages
# The list names packages, not versions: the base image's Debian release pins them.
RUN apt-get update \
  && sed -e 's/#.*//' /tmp/build-packages | awk 'NF { print $1 }' \
    | xargs apt-get install -y --no-install-recommends \
  && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The whole context (a single crate or a workspace of crates/ alike).
COPY . .
RUN cargo build --release --locked --bin nmid --bin nmid-faas --bin nmidctl

# Debian slim: glibc for the binaries, and a shell and coreutils for exec functions (images
# of your own functions start FROM this one and add their programs).
FROM ${RUNTIME_IMAGE}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# What the binaries need at run time beyond the base (the system's CAs): one shared list.
COPY scripts/runtime-packages /tmp/runtime-packages
RUN apt-get update \
  && sed -e 's/#.*//' /tmp/runtime-packages | awk 'NF { print $1 }' \
    | xargs apt-get install -y --no-install-recommends \
  && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages
COPY --from=build /src/target/release/nmid /usr/local/bin/nmid
COPY --from=build /src/target/release/nmid-faas /usr/local/bin/nmid-faas
COPY --from=build /src/target/release/nmidctl /usr/local/bin/nmidctl
COPY config/nmid.toml /etc/nmid/nmid.toml
COPY config/functions.toml /etc/nmid/functions.toml
# Not root: any unprivileged uid works; nothing is written inside the image.
USER 10001:10001
# 6808: the nmid protocol; 6809: HTTP (calls, admin API, /metrics, /healthz, /readyz).
EXPOSE 6808 6809
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["nmidctl", "health", "--request-timeout", "2s"]
ENTRYPOINT ["nmid"]
CMD ["--config", "/etc/nmid/nmid.toml"]
