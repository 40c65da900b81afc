-- PostgreSQL roles of the bridge (docs/deployment.md): run once as a superuser / the DBA, e.g.
--   psql -v owner_password="'...'" -v app_password="'...'" -f deploy/roles.sql
-- cd7_bridge_owner owns the schema and runs the migrations (`bridge serve` with its URL, once per upgrade);
-- cd7_bridge_app is what the replicas run as: rows only, no DDL, no ownership.
CREATE ROLE cd7_bridge_owner LOGIN PASSWORD :owner_password;
CREATE ROLE cd7_bridge_app LOGIN PASSWORD :app_password;
CREATE DATABASE cd7_bridge OWNER cd7_bridge_owner ENCODING 'UTF8' TEMPLATE template0;
\connect cd7_bridge
REVOKE ALL ON DATABASE cd7_bridge FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE cd7_bridge TO cd7_bridge_app;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
ALTER SCHEMA public OWNER TO cd7_bridge_owner;
GRANT USAGE ON SCHEMA public TO cd7_bridge_app;
-- what the owner creates from now on (every migration) is usable by the runtime role
ALTER DEFAULT PRIVILEGES FOR ROLE cd7_bridge_owner IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO cd7_bridge_app;
ALTER DEFAULT PRIVILEGES FOR ROLE cd7_bridge_owner IN SCHEMA public
    GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO cd7_bridge_app;
