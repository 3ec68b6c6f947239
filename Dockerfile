# One image for both programs: `docker build -t dbward .`, then
#   docker run dbward server --config /etc/dbward/server.toml --listen 0.0.0.0:3000
#   docker run dbward agent  --config /etc/dbward/dbward-agent.toml
# `--target tests` builds the same image plus the test suite (docker-compose.yml's `tests`).
FROM python:3.11-slim AS runtime
RUN useradd --system --create-home --uid 10001 dbward \
    && mkdir -p /etc/dbward /var/lib/dbward \
    && chown dbward:dbward /var/lib/dbward
WORKDIR /opt/dbward
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir .
COPY deploy/healthcheck.py /usr/local/bin/dbward-healthcheck
USER dbward
# The server answers GET /ready; the agent keeps its readiness file (docs/agent.md §2.11).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "/usr/local/bin/dbward-healthcheck"]
ENTRYPOINT ["dbward"]
CMD ["agent", "--config", "/etc/dbward/dbward-agent.toml"]

FROM runtime AS tests
USER root
RUN pip install --no-cache-dir '.[dev]'
COPY tests ./tests
COPY docs ./docs
COPY examples ./examples
COPY deploy ./deploy
RUN chown -R dbward:dbward /opt/dbward
USER dbward
ENTRYPOINT []
CMD ["python", "-m", "pytest", "-q", "tests/integration", "-p", "no:cacheprovider"]
