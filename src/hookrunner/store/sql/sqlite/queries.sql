-- name: applied_migrations
SELECT version FROM schema_migrations;

-- name: record_migration
INSERT INTO schema_migrations (version, name, applied_at) VALUES (:version, :name, :now);

-- name: find_delivery_by_key
SELECT id FROM deliveries WHERE hook = :hook AND dedup_key = :dedup_key;

-- name: insert_delivery
INSERT INTO deliveries (id, hook, received_at, headers, body, dedup_key, event, client_ip, matches,
                        query_params, verifier)
VALUES (:id, :hook, :received_at, :headers, :body, :dedup_key, :event, :client_ip, :matches,
        :query_params, :verifier)
ON CONFLICT (hook, dedup_key) DO NOTHING;

-- name: insert_run
INSERT INTO runs (id, delivery_id, rule, action, spec, status, concurrency_key, policy, timeout,
                  max_attempts, backoff, max_backoff, retry_on, created_at, next_attempt_at)
VALUES (:id, :delivery_id, :rule, :action, :spec, 'queued', :concurrency_key, :policy, :timeout,
        :max_attempts, :backoff, :max_backoff, :retry_on, :created_at, :next_attempt_at);

-- name: run_ids_of_delivery
SELECT id FROM runs WHERE delivery_id = :delivery_id ORDER BY seq;

-- name: claim_keyless
-- Due runs without a key, only as many as the claim may take: the rest cannot be claimed
-- this round and no policy looks at them.
-- (INDEXED BY: walking the partial index in seq order stops after `limit` rows; without
-- statistics the planner would sort every due run instead.)
SELECT r.*, d.hook FROM runs r INDEXED BY runs_queued_keyless
JOIN deliveries d ON d.id = r.delivery_id
WHERE r.status = 'queued' AND r.concurrency_key IS NULL AND r.next_attempt_at <= :now
ORDER BY r.seq LIMIT :limit;

-- name: claim_keyed
-- Due runs with a key. A `queue` key needs only its first runs and its newest (whose policy
-- is the key's); any other policy decides on all its waiting runs at once (skipping all but
-- one), so those are read whole. One key's long queue never hides another key's runs.
-- A key that is running and whose newest waiting run is `queue` has nothing to decide
-- but for its new `skip` runs, which end `skipped` now wherever they wait (read by
-- runs_queued_skip, below the window), so
-- its runs are left out before anything is sorted: with one busy key 10,000 deep, each claim
-- (on the event loop) took ~30 ms sorting runs that could not move. So is one whose run
-- waiting for its retry came before its due runs (it keeps its place: concurrency.decide),
-- unless a new `skip` run is the first of them (that one decides for itself). That is asked
-- of each key with due runs (an indexed look at its runs before the first), not of each run
-- in backoff (an outage's 30,000 retries cost each claim ~36 ms). runs_queued_keyed_at gives
-- the keys with due runs, and each due run's key below, without reading the table.
WITH due_keys AS (
    SELECT DISTINCT concurrency_key AS k FROM runs INDEXED BY runs_queued_keyed_at
    WHERE status = 'queued' AND concurrency_key IS NOT NULL AND next_attempt_at <= :now
), held AS (
    SELECT b.concurrency_key AS k FROM runs b
    WHERE b.status = 'running' AND b.concurrency_key IS NOT NULL
    UNION
    SELECT k FROM due_keys
    WHERE (SELECT NOT (q.policy = 'skip' AND q.attempt = 0)
                  AND EXISTS (SELECT 1 FROM runs b
                              WHERE b.concurrency_key = due_keys.k AND b.status = 'queued'
                                AND b.seq < q.seq AND NOT (b.policy = 'skip' AND b.attempt = 0))
           FROM runs q
           WHERE q.concurrency_key = due_keys.k AND q.status = 'queued'
             AND q.next_attempt_at <= :now
           ORDER BY q.seq LIMIT 1)
), blocked AS (
    SELECT k FROM held
    WHERE (SELECT q.policy FROM runs q
           WHERE q.status = 'queued' AND q.concurrency_key = held.k
             AND q.next_attempt_at <= :now
           ORDER BY q.seq DESC LIMIT 1) = 'queue'
)
SELECT r.*, d.hook FROM runs r JOIN deliveries d ON d.id = r.delivery_id
WHERE r.id IN (
    SELECT id FROM (
        SELECT id,
               ROW_NUMBER() OVER (PARTITION BY concurrency_key ORDER BY seq) AS head,
               ROW_NUMBER() OVER (PARTITION BY concurrency_key ORDER BY seq DESC) AS tail,
               FIRST_VALUE(policy) OVER (PARTITION BY concurrency_key ORDER BY seq DESC)
                   AS key_policy
        FROM runs INDEXED BY runs_queued_keyed_at
        WHERE status = 'queued' AND concurrency_key IS NOT NULL AND next_attempt_at <= :now
          AND concurrency_key NOT IN (SELECT k FROM blocked)
    ) AS due WHERE head <= :per_key OR tail = 1 OR key_policy <> 'queue'
    UNION ALL
    SELECT s.id FROM blocked JOIN runs s INDEXED BY runs_queued_skip ON s.concurrency_key = blocked.k
    WHERE s.status = 'queued' AND s.policy = 'skip' AND s.attempt = 0
      AND s.next_attempt_at <= :now
)
ORDER BY r.seq;

-- name: claim_later
-- The oldest run of each of these keys (a JSON array) that waits for a later attempt
-- (queued, not due): under `queue` it keeps its place (concurrency.decide). A range of
-- runs_queued_keyed_at: only keyed runs in a retry's backoff are read, however deep the due
-- backlog (and however many keyless retries).
SELECT r.*, d.hook FROM runs r JOIN deliveries d ON d.id = r.delivery_id
WHERE r.seq IN (
    SELECT min(seq) FROM runs INDEXED BY runs_queued_keyed_at
    WHERE status = 'queued' AND next_attempt_at > :now AND concurrency_key IS NOT NULL
      AND NOT (policy = 'skip' AND attempt = 0)
      AND concurrency_key IN (SELECT value FROM json_each(:keys))
    GROUP BY concurrency_key
);

-- name: running_keyed
SELECT r.*, d.hook FROM runs r JOIN deliveries d ON d.id = r.delivery_id
WHERE r.status = 'running' AND r.concurrency_key IS NOT NULL ORDER BY r.seq;

-- name: skip_run
UPDATE runs SET status = 'skipped', reason = :reason, superseded_by = :superseded_by,
                finished_at = :now,
                -- (the function's Python call only where there is something to hide)
                spec = CASE WHEN instr(spec, '"hidden_paths"') > 0
                            THEN hookrunner_ended_spec(spec) ELSE spec END,
                concurrency_key = hookrunner_ended_key(spec, concurrency_key)
WHERE id = :id AND status = 'queued';

-- name: repoint_superseded
-- Run `by` (of a replace/coalesce key) starts: the runs skipped on the way to it name it,
-- not each other. Under a burst each claim supersedes the waiting run again, so a skipped run
-- named the next waiting run, itself skipped later: the chain of skipped runs that leads to
-- `by` is followed back (each step by the superseded_by index) and everything naming one of
-- them (skipped, or a replaced run that ended canceled) names `by`. Once per run that starts,
-- over its own burst only: runs that ran end a chain.
WITH RECURSIVE chain(id) AS (
    SELECT id FROM runs WHERE superseded_by = :by AND status = 'skipped'
    UNION
    SELECT r.id FROM runs r JOIN chain c ON r.superseded_by = c.id WHERE r.status = 'skipped'
)
UPDATE runs SET superseded_by = :by, reason = replace(reason, superseded_by, :by)
WHERE id IN (SELECT r.id FROM chain c CROSS JOIN runs r  -- (CROSS: chain first, by the index)
             WHERE r.superseded_by = c.id AND r.status IN ('skipped', 'canceled'));

-- name: supersede_waiting
-- A replace/coalesce key's older runs waiting for a retry (concurrency.Decision.supersede).
UPDATE runs SET status = 'skipped', reason = :reason, superseded_by = :id, finished_at = :now,
                -- (the function's Python call only where there is something to hide)
                spec = CASE WHEN instr(spec, '"hidden_paths"') > 0
                            THEN hookrunner_ended_spec(spec) ELSE spec END,
                concurrency_key = hookrunner_ended_key(spec, concurrency_key)
WHERE status = 'queued' AND concurrency_key = :key AND seq < :seq AND next_attempt_at > :now
RETURNING id, rule, delivery_id, attempt, reason;

-- name: flag_cancel
-- :by is the run replacing it (policy replace), NULL for a cancel request.
UPDATE runs SET cancel_requested = 1, superseded_by = COALESCE(:by, superseded_by)
WHERE id = :id AND status = 'running';

-- name: start_run
UPDATE runs SET status = 'running', attempt = attempt + 1, started_at = :now,
                finished_at = NULL, exit_code = NULL, reason = '', lease_owner = :node,
                lease_expires = :lease_expires
WHERE id = :id AND status = 'queued';

-- name: insert_attempt
INSERT OR REPLACE INTO attempts (run_id, attempt, node, status, started_at)
VALUES (:run_id, :attempt, :node, 'running', :now);

-- name: renew
UPDATE runs SET lease_expires = :lease_expires
WHERE id = :id AND status = 'running' AND lease_owner = :node;

-- name: finish_attempt
-- After the run's own statement: a replaced run's reason names the run its superseded_by
-- holds now, as the run's does.
UPDATE attempts SET status = :outcome, exit_code = :exit_code,
                    reason = CASE WHEN :replaced_by IS NULL THEN :reason
                                  ELSE replace(:reason, :replaced_by, COALESCE(
                                      (SELECT superseded_by FROM runs WHERE id = :run_id),
                                      :replaced_by)) END,
                    finished_at = :finished_at, log = COALESCE(:log, log)
WHERE run_id = :run_id AND node = :node AND status = 'running'
  AND attempt = COALESCE(:attempt, attempt);

-- name: finish_run
-- `replaced_by`: the run the dispatcher's reason names; a newer replacer may have taken its
-- place in superseded_by since it read it (flag_cancel), and the reason names that one.
UPDATE runs SET status = :outcome, exit_code = :exit_code,
                reason = CASE WHEN :replaced_by IS NULL OR superseded_by IS NULL THEN :reason
                              ELSE replace(:reason, :replaced_by, superseded_by) END,
                outputs = :outputs, finished_at = :finished_at, lease_expires = NULL,
                -- replaced (see flag_cancel) only if the cancel is how it ended
                superseded_by = CASE WHEN :outcome = 'canceled' THEN superseded_by END,
                -- (the function's Python call only where there is something to hide)
                spec = CASE WHEN instr(spec, '"hidden_paths"') > 0
                            THEN hookrunner_ended_spec(spec) ELSE spec END,
                concurrency_key = hookrunner_ended_key(spec, concurrency_key)
WHERE id = :run_id AND status = 'running' AND lease_owner = :node
  AND attempt = COALESCE(:attempt, attempt);

-- name: requeue_run
-- Never a run whose cancel was asked for (or that was replaced): cancel_retry ends it.
UPDATE runs SET status = 'queued', exit_code = :exit_code, reason = :reason,
                outputs = :outputs, next_attempt_at = :retry_at, lease_owner = NULL,
                lease_expires = NULL, superseded_by = NULL
WHERE id = :run_id AND status = 'running' AND lease_owner = :node AND cancel_requested = 0
  AND attempt = COALESCE(:attempt, attempt);

-- name: cancel_retry
UPDATE runs SET status = 'canceled', exit_code = :exit_code, outputs = :outputs,
                finished_at = :finished_at, lease_expires = NULL,
                reason = CASE WHEN superseded_by IS NULL THEN :cancel_reason
                              ELSE 'canceled: replaced by run ' || superseded_by END,
                -- (the function's Python call only where there is something to hide)
                spec = CASE WHEN instr(spec, '"hidden_paths"') > 0
                            THEN hookrunner_ended_spec(spec) ELSE spec END,
                concurrency_key = hookrunner_ended_key(spec, concurrency_key)
WHERE id = :run_id AND status = 'running' AND lease_owner = :node AND cancel_requested = 1
  AND attempt = COALESCE(:attempt, attempt);

-- name: expired
SELECT r.*, d.hook FROM runs r JOIN deliveries d ON d.id = r.delivery_id
WHERE r.status = 'running' AND r.lease_expires < :now ORDER BY r.seq;

-- name: running
SELECT r.*, d.hook FROM runs r JOIN deliveries d ON d.id = r.delivery_id
WHERE r.status = 'running' ORDER BY r.seq;

-- name: cancel_queued
UPDATE runs SET status = 'canceled',
    reason = CASE WHEN attempt > 0 THEN :retry_reason ELSE :reason END, finished_at = :now,
                -- (the function's Python call only where there is something to hide)
                spec = CASE WHEN instr(spec, '"hidden_paths"') > 0
                            THEN hookrunner_ended_spec(spec) ELSE spec END,
                concurrency_key = hookrunner_ended_key(spec, concurrency_key)
WHERE id = :id AND status = 'queued';

-- name: run_status
SELECT status FROM runs WHERE id = :id;

-- name: cancel_requests
SELECT id, superseded_by FROM runs WHERE status = 'running' AND lease_owner = :node AND cancel_requested = 1;

-- name: known_runs
-- Which of a list of run ids are still stored (retention's run dirs).
SELECT id FROM runs WHERE id IN (SELECT value FROM json_each(:ids));

-- name: get_run
SELECT r.*, d.hook FROM runs r JOIN deliveries d ON d.id = r.delivery_id WHERE r.id = :id;

-- name: list_runs
-- The filters given are added by the store (store/_rows.listing): `(:x IS NULL OR col = :x)`
-- would keep SQLite from its indexes, and PostgreSQL's generic plans too.
-- A listing carries a rendered action of at most 64 KiB (one forwarding a whole payload was
-- megabytes in each listing, and in the server's memory): a larger one is its size, with
-- its hidden-key mark (redact.HIDDEN_KEY); store/base.LISTED_SPEC says so for the memory store.
SELECT r.seq, r.id, r.delivery_id, r.rule, r.action,
       CASE WHEN length(r.spec) <= 65536 THEN r.spec
            ELSE '{"omitted_bytes":' || length(r.spec) || ',"hidden_concurrency_key":' ||
                 CASE WHEN instr(r.spec, '"hidden_concurrency_key":true') THEN 'true' ELSE 'false' END
                 || '}' END AS spec,
       r.status, r.attempt, r.concurrency_key, r.policy, r.timeout, r.max_attempts,
       r.backoff, r.max_backoff, r.retry_on, r.created_at, r.next_attempt_at, r.started_at,
       r.finished_at, r.exit_code, r.reason, r.outputs, r.lease_owner, r.lease_expires,
       r.cancel_requested, r.superseded_by, d.hook
FROM runs r JOIN deliveries d ON d.id = r.delivery_id
{where} ORDER BY r.seq DESC LIMIT {limit};

-- name: attempts
SELECT * FROM attempts WHERE run_id = :run_id ORDER BY attempt;

-- name: get_log
SELECT log FROM attempts WHERE run_id = :run_id AND attempt = :attempt;

-- name: log_length
SELECT length(log) FROM attempts WHERE run_id = :run_id AND attempt = :attempt;

-- name: get_log_head
SELECT substr(log, 1, :chars), length(log) > :chars FROM attempts
WHERE run_id = :run_id AND attempt = :attempt;

-- name: get_delivery
SELECT * FROM deliveries WHERE id = :id;

-- name: list_deliveries
SELECT * FROM deliveries {where} ORDER BY received_at DESC, id DESC LIMIT {limit};

-- name: counts
SELECT status, count(*) AS n FROM runs GROUP BY status;

-- name: count_queued
SELECT count(*) AS n FROM runs WHERE status = 'queued';

-- name: next_due
SELECT min(next_attempt_at) AS due FROM runs WHERE status = 'queued';

-- name: prune
-- At most `chunk` deliveries per statement: a long history is deleted in many short
-- transactions, so accepts are never held up behind one huge delete.
DELETE FROM deliveries
WHERE id IN (
  SELECT id FROM deliveries
  WHERE received_at < :before
    AND NOT EXISTS (
      SELECT 1 FROM runs r WHERE r.delivery_id = deliveries.id
        AND (r.status IN ('queued', 'running') OR r.finished_at IS NULL
             OR r.finished_at >= :before)
    )
  LIMIT :chunk
);
