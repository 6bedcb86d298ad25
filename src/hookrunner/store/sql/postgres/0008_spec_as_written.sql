-- A run's rendered action as it was written, not as JSONB keeps it: JSONB sorts an object's
-- keys and reads numbers as numerics (1e16 came back as 10000000000000000, -0.0 as 0.0),
-- so an action got other JSON on PostgreSQL than `hookrunner test` showed and SQLite gave.
-- `json` keeps the text as it is. Existing rows are converted as JSONB holds them; this
-- rewrites the runs table (an exclusive lock on it meanwhile, and room for a copy).
ALTER TABLE runs ALTER COLUMN spec TYPE json USING spec::json;

-- 0006's functions for a json spec, which a node of the version before this one calls too
-- (in a cluster halfway through an upgrade): the spec as it is unless it has values to
-- hide, which go through the jsonb twin (that spec is then as JSONB keeps it).
CREATE OR REPLACE FUNCTION hookrunner_ended_spec(spec json) RETURNS json
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN json_typeof(spec) = 'object' AND json_typeof(spec -> 'hidden_paths') = 'array'
                THEN hookrunner_ended_spec(spec::jsonb)::json ELSE spec END
$$;

CREATE OR REPLACE FUNCTION hookrunner_ended_key(spec json, key text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN key IS NOT NULL AND json_typeof(spec) = 'object'
                     AND (spec ->> 'hidden_concurrency_key') = 'true'
                THEN '[redacted]' ELSE key END
$$;
