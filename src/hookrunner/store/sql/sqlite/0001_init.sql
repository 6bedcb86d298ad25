-- Deliveries as received, and the runs they queued. Times are unix seconds (REAL).
CREATE TABLE deliveries (
    id          TEXT PRIMARY KEY,
    hook        TEXT NOT NULL,
    received_at REAL NOT NULL,
    headers     TEXT NOT NULL,          -- JSON list of [name, value], secrets redacted
    body        BLOB NOT NULL,          -- raw, exactly as received
    dedup_key   TEXT,
    event       TEXT,
    client_ip   TEXT NOT NULL,
    matches     TEXT NOT NULL,          -- JSON: per-rule explanation
    replay_of   TEXT,
    UNIQUE (hook, dedup_key)            -- NULL keys never collide
);
CREATE INDEX deliveries_received ON deliveries (received_at);

CREATE TABLE runs (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,  -- arrival order, never reused
    id               TEXT NOT NULL UNIQUE,
    delivery_id      TEXT NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    rule             TEXT NOT NULL,
    action           TEXT NOT NULL,
    spec             TEXT NOT NULL,
    status           TEXT NOT NULL,
    attempt          INTEGER NOT NULL DEFAULT 0,
    concurrency_key  TEXT,
    policy           TEXT NOT NULL DEFAULT 'queue',
    timeout          REAL,
    max_attempts     INTEGER NOT NULL DEFAULT 1,
    backoff          REAL NOT NULL DEFAULT 0,
    max_backoff      REAL NOT NULL DEFAULT 0,
    retry_on         TEXT NOT NULL DEFAULT '[]',
    created_at       REAL NOT NULL,
    next_attempt_at  REAL NOT NULL,
    started_at       REAL,
    finished_at      REAL,
    exit_code        INTEGER,
    reason           TEXT NOT NULL DEFAULT '',
    outputs          TEXT NOT NULL DEFAULT '{}',
    lease_owner      TEXT,
    lease_expires    REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
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
    started_at  REAL NOT NULL,
    finished_at REAL,
    log         TEXT,                   -- the capped log, copied in at finish
    PRIMARY KEY (run_id, attempt)
);
