-- Deliveries as received, and the runs they queued. Times are unix seconds (double).
CREATE TABLE deliveries (
    id          TEXT PRIMARY KEY,
    hook        TEXT NOT NULL,
    received_at DOUBLE PRECISION NOT NULL,
    headers     JSONB NOT NULL,         -- list of [name, value], secrets redacted
    body        BYTEA NOT NULL,         -- raw, exactly as received
    dedup_key   TEXT,
    event       TEXT,
    client_ip   TEXT NOT NULL,
    matches     JSONB NOT NULL,         -- per-rule explanation
    replay_of   TEXT,
    UNIQUE (hook, dedup_key)            -- NULL keys never collide
);
CREATE INDEX deliveries_received ON deliveries (received_at);

CREATE TABLE runs (
    seq              BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,  -- arrival order
    id               TEXT PRIMARY KEY,
    delivery_id      TEXT NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    rule             TEXT NOT NULL,
    action           TEXT NOT NULL,
    spec             JSONB NOT NULL,
    status           TEXT NOT NULL,
    attempt          INTEGER NOT NULL DEFAULT 0,
    concurrency_key  TEXT,
    policy           TEXT NOT NULL DEFAULT 'queue',
    timeout          DOUBLE PRECISION,
    max_attempts     INTEGER NOT NULL DEFAULT 1,
    backoff          DOUBLE PRECISION NOT NULL DEFAULT 0,
    max_backoff      DOUBLE PRECISION NOT NULL DEFAULT 0,
    retry_on         JSONB NOT NULL DEFAULT '[]',
    created_at       DOUBLE PRECISION NOT NULL,
    next_attempt_at  DOUBLE PRECISION NOT NULL,
    started_at       DOUBLE PRECISION,
    finished_at      DOUBLE PRECISION,
    exit_code        INTEGER,
    reason           TEXT NOT NULL DEFAULT '',
    outputs          JSONB NOT NULL DEFAULT '{}',
    lease_owner      TEXT,
    lease_expires    DOUBLE PRECISION,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    superseded_by    TEXT
);
CREATE INDEX runs_claim ON runs (status, next_attempt_at, seq);
CREATE INDEX runs_key ON runs (concurrency_key, status);
CREATE INDEX runs_delivery ON runs (delivery_id);

CREATE TABLE attempts (
    run_id      TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    node        TEXT NOT NULL,
    status      TEXT NOT NULL,
    exit_code   INTEGER,
    reason      TEXT NOT NULL DEFAULT '',
    started_at  DOUBLE PRECISION NOT NULL,
    finished_at DOUBLE PRECISION,
    log         TEXT,                   -- the capped log, copied in at finish
    PRIMARY KEY (run_id, attempt)
);
