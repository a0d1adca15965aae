#!/bin/sh
# Runs once, when the postgres service initialises its data volume (after 10-schema.sql,
# examples/logistics/schema.sql). Creates the login roles examples/logistics/policy.yaml maps to
# policy roles, and the login pgveil reads the catalog with. Passwords come from the
# environment docker-compose.yml sets; they are for this local stack only.
set -e
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v app_password="${PGVEIL_APP_PASSWORD:-demo-only-password}" \
  -v catalog_password="${PGVEIL_CATALOG_PASSWORD:-demo-only-catalog}" \
  -v dbname="$POSTGRES_DB" <<'SQL'
-- Application logins, one per policy role of examples/logistics/policy.yaml:
-- dispatcher: dispatch_app, support: support_app ("support_*"), driver: driver_app,
-- analyst: bi_reader, auditor: compliance.
CREATE ROLE dispatch_app LOGIN PASSWORD :'app_password';
CREATE ROLE support_app  LOGIN PASSWORD :'app_password';
CREATE ROLE driver_app   LOGIN PASSWORD :'app_password';
CREATE ROLE bi_reader    LOGIN PASSWORD :'app_password';
CREATE ROLE compliance   LOGIN PASSWORD :'app_password';
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public
  TO dispatch_app, support_app, driver_app, bi_reader, compliance;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public
  TO dispatch_app, support_app, driver_app, bi_reader, compliance;

-- The catalog login (catalog.user in deploy/pgveil/pgveil.yaml): LOGIN and CONNECT only.
CREATE ROLE pgveil_catalog LOGIN PASSWORD :'catalog_password';
GRANT CONNECT ON DATABASE :"dbname" TO pgveil_catalog;
SQL
