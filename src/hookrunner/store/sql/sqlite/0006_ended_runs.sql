-- Runs that ended before this version keep no value rendered from a secret request header
-- (hookrunner.redact.ended_spec/ended_key, the functions every connection of the SQLite store
-- has: the statements that end a run call them, see queries.sql).
UPDATE runs SET spec = hookrunner_ended_spec(spec),
                concurrency_key = hookrunner_ended_key(spec, concurrency_key)
WHERE status IN ('succeeded', 'failed', 'timed_out', 'canceled', 'skipped')
  AND instr(spec, '"hidden_paths"') > 0;
