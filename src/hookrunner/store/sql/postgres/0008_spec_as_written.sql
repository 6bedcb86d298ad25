-- A run's rendered action as it was written, not as JSONB keeps it: JSONB sorts an object's
-- keys and reads numbers as numerics (1e16 came back as 10000000000000000, -0.0 as 0.0),
-- so an action got other JSON on PostgreSQL than `hookrunner test` showed and SQLite gave.
-- `json` keeps the text as it is (the ended-run functions of 0006 take it cast to jsonb).
-- Existing rows are converted as JSONB holds them. This rewrites the runs table.
ALTER TABLE runs ALTER COLUMN spec TYPE json USING spec::json;
