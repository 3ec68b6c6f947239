# The dbward image: `docker build -t dbward .`, then `docker run dbward agent --config ...`.
FROM python:3.11-slim
RUN useradd --system --create-home dbward
WORKDIR /opt/dbward
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir .
USER dbward
ENTRYPOINT ["dbward"]
CMD ["agent", "--config", "/etc/dbward/dbward-agent.toml"]
