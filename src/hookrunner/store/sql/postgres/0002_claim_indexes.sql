-- Claims read queued runs with and without a concurrency key separately (keyless ones only
-- up to the claim's limit), so a deep queue costs a claim an index range, not a scan.
CREATE INDEX runs_queued_keyless ON runs (seq) WHERE status = 'queued' AND concurrency_key IS NULL;
CREATE INDEX runs_queued_keyed ON runs (seq) WHERE status = 'queued' AND concurrency_key IS NOT NULL;
