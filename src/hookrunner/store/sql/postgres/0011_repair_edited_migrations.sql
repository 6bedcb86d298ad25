-- Repairs a database migrated by a development version that ran an earlier text of 0008 or
-- 0009 (each was edited after those versions had applied it, and a migration's version,
-- once recorded, is never applied again). On any other database it changes nothing and
-- needs no right a server's role lacks: each part only looks in the catalog first.

-- 0008 as first written had no json twins of the end-of-run functions: every end of a run
-- failed ("function hookrunner_ended_spec(json) does not exist"), its run left `running`.
DO $$
BEGIN
    IF to_regprocedure('hookrunner_ended_spec(json)') IS NULL THEN
        EXECUTE 'CREATE FUNCTION hookrunner_ended_spec(spec json) RETURNS json '
                'LANGUAGE sql IMMUTABLE AS '
                '''SELECT CASE WHEN json_typeof(spec) = ''''object'''' '
                'AND json_typeof(spec -> ''''hidden_paths'''') = ''''array'''' '
                'THEN hookrunner_ended_spec(spec::jsonb)::json ELSE spec END''';
    END IF;
    IF to_regprocedure('hookrunner_ended_key(json, text)') IS NULL THEN
        EXECUTE 'CREATE FUNCTION hookrunner_ended_key(spec json, key text) RETURNS text '
                'LANGUAGE sql IMMUTABLE AS '
                '''SELECT CASE WHEN key IS NOT NULL AND json_typeof(spec) = ''''object'''' '
                'AND (spec ->> ''''hidden_concurrency_key'''') = ''''true'''' '
                'THEN ''''[redacted]'''' ELSE key END''';
    END IF;
END $$;

-- 0009 as first written added a `verifier` column to deliveries instead of this table:
-- every delivery failed ("relation delivery_verifiers does not exist"). The column's values
-- are copied here once; the column stays, for a node of that version still running (what it
-- writes there from now on shows as unknown).
DO $$
BEGIN
    IF to_regclass('delivery_verifiers') IS NULL THEN
        CREATE TABLE delivery_verifiers (
            delivery_id TEXT PRIMARY KEY REFERENCES deliveries (id) ON DELETE CASCADE,
            verifier    TEXT NOT NULL
        );
        IF EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_schema = current_schema() AND table_name = 'deliveries'
                     AND column_name = 'verifier') THEN
            EXECUTE 'INSERT INTO delivery_verifiers (delivery_id, verifier) '
                    'SELECT id, verifier FROM deliveries WHERE verifier IS NOT NULL';
        END IF;
    END IF;
END $$;
