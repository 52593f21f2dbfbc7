# radialrouter serve in a container. Not built or run on the project's machines (they have no container engine):
# written to be minimal and correct, and checked by reading only. See docs/deployment.md.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    OMP_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false

WORKDIR /app
# Metadata first, so the dependency layer is rebuilt only when pyproject.toml changes.
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN pip install ".[serve,postgres]" \
    && useradd --system --uid 10001 --home-dir /app radialrouter

USER radialrouter
EXPOSE 8000
# The config comes from a mounted file (a ConfigMap); secrets and the database URL from the environment.
ENTRYPOINT ["radialrouter", "serve", "--config", "/etc/radialrouter/serve.yaml"]
