# mailgate container image: a static binary on distroless, run as a
# non-root user.
#
#   docker build -t mailgate --build-arg VERSION=$(git describe --always --dirty) .
#   docker run --rm -p 25:2525 -v $PWD/gateway.yaml:/etc/mailgate/gateway.yaml:ro mailgate
#
# The gateway listens on unprivileged ports inside the container (2525 for
# SMTP, 2587 for submission, 9025 for metrics) and the container runtime
# publishes them as 25/587: the process needs no root and no capability at
# all (docker-compose.yml does this).

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# Static (no cgo: user and DNS lookups in pure Go), reproducible paths.
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/mailgate ./cmd/gateway \
 && mkdir -p /out/state && chmod 0700 /out/state

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/mailgate /usr/local/bin/mailgate
# state.store file:/var/lib/mailgate/state.db (the default) must be
# writable by the user: the directory is its own.
COPY --from=build --chown=65532:65532 /out/state /var/lib/mailgate
USER 65532:65532
EXPOSE 2525 2587 9025
VOLUME ["/var/lib/mailgate"]
ENTRYPOINT ["/usr/local/bin/mailgate"]
CMD ["run", "--config", "/etc/mailgate/gateway.yaml"]
