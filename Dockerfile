# Build stage: compile the algoagent binary in release mode.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p server --bin algoagent

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
