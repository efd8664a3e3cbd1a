# The operator image: build the wheel in one stage, install it into a slim runtime as non-root.
FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN python -m pip install --no-cache-dir build==1.* && python -m build --wheel --outdir /dist

FROM python:3.12-slim
RUN useradd --uid 10001 --create-home --shell /usr/sbin/nologin rollouts
COPY --from=build /dist/*.whl /tmp/
RUN python -m pip install --no-cache-dir /tmp/*.whl && rm /tmp/*.whl
USER 10001
ENTRYPOINT ["lambda-rollouts", "run"]
