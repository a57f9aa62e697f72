# Build stage: compile the algoagent binary in release mode.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p server --bin algoagent

# Worker variant (`docker build --target worker`): `algoagent worker` runs
# backtests in the bubblewrap sandbox. It starts as root only to drop each
# run to the unprivileged `algoagent-sandbox` account (root ignores
# RLIMIT_NPROC); the server itself never runs user code. bubblewrap needs
# user namespaces, which Docker's default seccomp profile blocks: run it
# with `--security-opt seccomp=unconfined` (or a profile allowing clone and
# unshare of CLONE_NEWUSER/NEWNS/NEWPID/NEWNET/NEWIPC, and mount), plus
# `--security-opt apparmor=unconfined` on hosts that confine containers,
# on a host kernel with user namespaces enabled (user.max_user_namespaces
# > 0). No extra capability is needed. `algoagent sandbox status` says
# whether it works.
FROM debian:bookworm-slim AS worker
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates bubblewrap python3 python3-venv util-linux \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/algoagent /usr/local/bin/algoagent
ENV SANDBOX_ENV_DIR=/opt/algoagent/sandbox-env \
    LOG_FORMAT=json
# The account and the pinned environment; the proving run needs namespaces,
# which an image build does not have.
RUN mkdir -p /opt/algoagent \
 && DATABASE_URL=sqlite::memory: JWT_SECRET=image-build-only-not-a-secret-0123456789 \
    algoagent sandbox setup --skip-check
WORKDIR /var/lib/algoagent
ENTRYPOINT ["algoagent"]
CMD ["worker"]

# Runtime stage: a small image with the binary, running as a non-root user.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home /var/lib/algoagent --create-home algoagent
COPY --from=build /src/target/release/algoagent /usr/local/bin/algoagent
USER algoagent
WORKDIR /var/lib/algoagent
ENV BIND_ADDR=0.0.0.0:8000 \
    LOG_FORMAT=json
EXPOSE 8000
ENTRYPOINT ["algoagent"]
CMD ["serve"]
