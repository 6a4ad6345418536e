#!/bin/bash
# First start of the Postgres container only (docker-entrypoint-initdb.d): a database and an owning
# role each for Dagster's run/event/schedule storage and Superset's metadata. Passwords come from
# the environment (.env); psql's :'var' quoting keeps them out of the SQL text.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v dagster_pw="$DAGSTER_PG_PASSWORD" -v superset_pw="$SUPERSET_PG_PASSWORD" <<'SQL'
CREATE ROLE dagster LOGIN PASSWORD :'dagster_pw';
CREATE DATABASE dagster OWNER dagster;
CREATE ROLE superset LOGIN PASSWORD :'superset_pw';
CREATE DATABASE superset OWNER superset;
SQL
