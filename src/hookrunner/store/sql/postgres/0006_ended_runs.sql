-- What the statements that end a run store (queries.sql): the values a run's spec holds at
-- its hidden_paths (rendered from secret request headers) are kept only while the run may
-- still run, then replaced by '[redacted]'; so is a concurrency key rendered from one
-- (hidden_concurrency_key). The Python twins are hookrunner.redact.ended_spec/ended_key.
-- Neither raises: a spec they cannot read is kept rather than fail the end of a run.
CREATE OR REPLACE FUNCTION hookrunner_ended_spec(spec jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    path jsonb;
    steps text[];
    ended jsonb := spec;
BEGIN
    -- IS DISTINCT FROM: a spec without hidden_paths (NULL) returns here, not below.
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

CREATE OR REPLACE FUNCTION hookrunner_ended_key(spec jsonb, key text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN key IS NOT NULL AND jsonb_typeof(spec) = 'object'
                     AND spec -> 'hidden_concurrency_key' = 'true'::jsonb
                THEN '[redacted]' ELSE key END
$$;

-- Runs that ended before this version: the same, once.
UPDATE runs SET spec = hookrunner_ended_spec(spec),
                concurrency_key = hookrunner_ended_key(spec, concurrency_key)
WHERE status IN ('succeeded', 'failed', 'timed_out', 'canceled', 'skipped')
  AND spec ? 'hidden_paths';
