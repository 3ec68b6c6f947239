#!/bin/sh
# Run the agent in a container on the database network, config mounted read-only.
exec docker run -d --name dbward-agent \
  --network "${DBWARD_DB_NETWORK:-dbward-db}" \
  -e DBWARD_AGENT_TOKEN \
  -e DATABASE_URL \
  -v "$(pwd)/dbward-agent.toml:/etc/dbward/dbward-agent.toml:ro" \
  --restart unless-stopped \
  --stop-timeout 90 \
  dbward:latest agent --config /etc/dbward/dbward-agent.toml
