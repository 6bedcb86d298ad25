-- A key's new `skip` runs that wait: a claim asks of each busy key whether one is there
-- (it ends `skipped` at once, even behind newer `queue` runs), without reading the key's
-- whole queue.
CREATE INDEX IF NOT EXISTS runs_queued_skip ON runs (concurrency_key, next_attempt_at)
    WHERE status = 'queued' AND policy = 'skip' AND attempt = 0;
