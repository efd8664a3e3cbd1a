# syntax=docker/dockerfile:1
# The operator image: the wheel is built in one stage and installed, alone with its runtime
# dependencies, into a slim Python in the next, which runs as a non-root user.
#
#   docker build -t ghcr.io/lambda-rollouts/lambda-rollouts:0.1.0 .

FROM python:3.12-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# Only what the wheel is made of (.dockerignore keeps the rest of the tree out of the context).
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

FROM python:3.12-slim
LABEL org.opencontainers.image.title="lambda-rollouts" \
      org.opencontainers.image.description="Progressive delivery for AWS Lambda aliases, as a Kubernetes operator" \
      org.opencontainers.image.licenses="Apache-2.0"
# No .pyc written at run time (the root filesystem is read-only in the cluster; pip compiled the
# installed modules already), and log lines leave the process as they are written.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
# 65532 is the usual "nonroot" id (as in distroless images); the Deployment's runAsUser matches it.
RUN groupadd --system --gid 65532 nonroot \
 && useradd --system --uid 65532 --gid 65532 --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin nonroot
# The wheel is mounted from the build stage rather than copied, so no layer keeps it.
RUN --mount=type=bind,from=build,source=/dist,target=/dist \
    python -m pip install --no-cache-dir /dist/*.whl
USER 65532:65532
# 8080: Kopf's liveness endpoint (run --liveness); 9090: Prometheus metrics.
EXPOSE 8080 9090
ENTRYPOINT ["lambda-rollouts"]
CMD ["run"]
