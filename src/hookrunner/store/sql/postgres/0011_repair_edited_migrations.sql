-- Repairs a database migrated by a development version that ran an earlier text of 0006,
-- 0008 or 0009 (each was edited after those versions had applied it, and a migration's
-- version, once recorded, is never applied again). Everything here is a no-op on a database
-- that ran their present text.

-- 0006 as first written: no later fixes to the end-of-run function (IS DISTINCT FROM), and
-- no redaction of runs that ended before it (below).
CREATE OR REPLACE FUNCTION hookrunner_ended_spec(spec jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    path jsonb;
    steps text[];
    ended jsonb := spec;
BEGIN
    IF jsonb_typeof(spec) IS DISTINCT FROM 'object'
       OR jsonb_typeof(spec -> 'hidden_paths') IS DISTINCT FROM 'array' THEN
        RETURN spec;
    END IF;
    BEGIN
        FOR path IN SELECT jsonb_array_elements(spec -> 'hidden_paths') LOOP
            CONTINUE WHEN jsonb_typeof(path) IS DISTINCT FROM 'array'
                          OR jsonb_array_length(path) = 0;
            steps := ARRAY(SELECT jsonb_array_elements_text(path));
            CONTINUE WHEN ended #> steps IS NULL;
            ended := jsonb_set(ended, steps, '"[redacted]"'::jsonb, false);
        END LOOP;
    EXCEPTION WHEN OTHERS THEN
        RETURN spec;
    END;
    RETURN ended;
END $$;

-- 0008 as first written: no json twins of the functions, and every end of a run failed
-- ("function hookrunner_ended_spec(json) does not exist"), its run left `running`.
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

-- 0009 as first written: a `verifier` column of deliveries instead of this table, and every
-- delivery failed ("relation delivery_verifiers does not exist"). The column's values are
-- kept here; the column stays, for a node of that version still running.
CREATE TABLE IF NOT EXISTS delivery_verifiers (
    delivery_id TEXT PRIMARY KEY REFERENCES deliveries (id) ON DELETE CASCADE,
    verifier    TEXT NOT NULL
);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM information_schema.columns
               WHERE table_schema = current_schema() AND table_name = 'deliveries'
                 AND column_name = 'verifier') THEN
        EXECUTE 'INSERT INTO delivery_verifiers (delivery_id, verifier) '
                'SELECT id, verifier FROM deliveries WHERE verifier IS NOT NULL '
                'ON CONFLICT (delivery_id) DO NOTHING';
    END IF;
END $$;

-- Runs that ended before 0006's redaction ran (or before it was there): redacted now. Only
-- rows it changes are written.
UPDATE runs SET spec = hookrunner_ended_spec(spec),
                concurrency_key = hookrunner_ended_key(spec, concurrency_key)
WHERE status IN ('succeeded', 'failed', 'timed_out', 'canceled', 'skipped')
  AND json_typeof(spec -> 'hidden_paths') = 'array'
  AND (hookrunner_ended_spec(spec)::text IS DISTINCT FROM spec::text
       OR hookrunner_ended_key(spec, concurrency_key) IS DISTINCT FROM concurrency_key);
