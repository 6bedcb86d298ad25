-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL);

-- name: applied_migrations
SELECT version FROM schema_migrations;

-- name: record_migration
INSERT INTO schema_migrations (version, name, applied_at) VALUES (%(version)s, %(name)s, %(now)s);

-- name: insert_delivery
-- (Its verifier in a table of its own, in the same statement: see 0009.)
WITH d AS (
  INSERT INTO deliveries (id, hook, received_at, headers, body, dedup_key, event, client_ip,
                          matches, query_params)
  VALUES (%(id)s, %(hook)s, %(received_at)s, %(headers)s::jsonb, %(body)s, %(dedup_key)s,
          %(event)s, %(client_ip)s, %(matches)s::jsonb, %(query_params)s::jsonb)
  ON CONFLICT (hook, dedup_key) DO NOTHING
  RETURNING id
), v AS (
  INSERT INTO delivery_verifiers (delivery_id, verifier)
  SELECT id, %(verifier)s::text FROM d WHERE %(verifier)s::text IS NOT NULL
)
SELECT id FROM d;

-- name: find_delivery_by_key
SELECT id FROM deliveries WHERE hook = %(hook)s AND dedup_key = %(dedup_key)s;

-- name: insert_run
INSERT INTO runs (id, delivery_id, rule, action, spec, status, concurrency_key, policy, timeout,
                  max_attempts, backoff, max_backoff, retry_on, created_at, next_attempt_at)
VALUES (%(id)s, %(delivery_id)s, %(rule)s, %(action)s, %(spec)s::json, 'queued',
        %(concurrency_key)s, %(policy)s, %(timeout)s, %(max_attempts)s, %(backoff)s,
        %(max_backoff)s, %(retry_on)s::jsonb, %(created_at)s, %(next_attempt_at)s);

-- name: notify
NOTIFY hookrunner_runs;

-- name: run_ids_of_delivery
SELECT id FROM runs WHERE delivery_id = %(delivery_id)s ORDER BY seq;

-- name: run_ids_of_deliveries
SELECT delivery_id, id FROM runs WHERE delivery_id = ANY(%(ids)s) ORDER BY seq;

-- name: claim_lock
SELECT pg_advisory_xact_lock(%(lock)s);

-- name: claim_keyless
-- Due runs without a key, only as many as the claim may take: the rest cannot be claimed
-- this round and no policy looks at them.
SELECT r.*, d.hook FROM runs r JOIN deliveries d ON d.id = r.delivery_id
WHERE r.status = 'queued' AND r.concurrency_key IS NULL AND r.next_attempt_at <= %(now)s
ORDER BY r.seq LIMIT %(limit)s
FOR UPDATE OF r SKIP LOCKED;

-- name: claim_keyed
-- Due runs with a key. A `queue` key needs only its first runs and its newest (whose policy
-- is the key's); any other policy decides on all its waiting runs at once (skipping all but
-- one), so those are read whole. One key's long queue never hides another key's runs.
-- A key that is running and whose newest waiting run is `queue` has nothing to decide
-- but for its new `skip` runs, which end `skipped` now wherever they wait (read by
-- runs_queued_skip, below the window), so
-- its runs are left out before anything is sorted (see the SQLite query), as is one whose run
-- waiting for its retry came before its due runs (it keeps its place: concurrency.decide),
-- unless a new `skip` run is the first of them (that one decides for itself): asked of each
-- key with due runs (runs_queued_keyed_at, then runs_key), not of each run in backoff.
WITH due_keys AS (
    SELECT DISTINCT concurrency_key AS k FROM runs
    WHERE status = 'queued' AND concurrency_key IS NOT NULL AND next_attempt_at <= %(now)s
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
             AND q.next_attempt_at <= %(now)s
           ORDER BY q.seq LIMIT 1)
), blocked AS (
    SELECT k FROM held
    WHERE (SELECT q.policy FROM runs q
           WHERE q.status = 'queued' AND q.concurrency_key = held.k
             AND q.next_attempt_at <= %(now)s
           ORDER BY q.seq DESC LIMIT 1) = 'queue'
)
-- `r.status` is tested again outside the window: a run a cancel ended after this statement's
-- snapshot is locked in its new version, and only these conditions are checked again on it
-- (the window's subquery is not), so without it a canceled run was claimed and started.
SELECT r.*, d.hook FROM runs r JOIN deliveries d ON d.id = r.delivery_id
WHERE r.status = 'queued' AND r.id IN (
    SELECT id FROM (
        SELECT id,
               ROW_NUMBER() OVER (PARTITION BY concurrency_key ORDER BY seq) AS head,
               ROW_NUMBER() OVER (PARTITION BY concurrency_key ORDER BY seq DESC) AS tail,
               FIRST_VALUE(policy) OVER (PARTITION BY concurrency_key ORDER BY seq DESC)
                   AS key_policy
        FROM runs
        WHERE status = 'queued' AND concurrency_key IS NOT NULL AND next_attempt_at <= %(now)s
          AND concurrency_key NOT IN (SELECT k FROM blocked)
    ) AS due WHERE head <= %(per_key)s OR tail = 1 OR key_policy <> 'queue'
    UNION ALL
    SELECT s.id FROM blocked JOIN runs s ON s.concurrency_key = blocked.k
    WHERE s.status = 'queued' AND s.policy = 'skip' AND s.attempt = 0
      AND s.next_attempt_at <= %(now)s
)
ORDER BY r.seq
FOR UPDATE OF r SKIP LOCKED;

-- name: claim_later
-- The oldest run of each of these keys that waits for a later attempt (queued, not due):
-- under `queue` it keeps its place (concurrency.decide). Only keyed runs in a retry's backoff
-- are read (runs_queued_keyed_at), however deep the due backlog. Not locked: a cancel that
-- ends it meanwhile wakes the nodes (NOTIFY), whose next claim takes the key's next run.
SELECT r.*, d.hook FROM runs r JOIN deliveries d ON d.id = r.delivery_id
WHERE r.seq IN (
    SELECT min(seq) FROM runs
    WHERE status = 'queued' AND next_attempt_at > %(now)s AND concurrency_key IS NOT NULL
      AND NOT (policy = 'skip' AND attempt = 0) AND concurrency_key = ANY(%(keys)s)
    GROUP BY concurrency_key
);

-- name: running_keyed
SELECT r.*, d.hook FROM runs r JOIN deliveries d ON d.id = r.delivery_id
WHERE r.status = 'running' AND r.concurrency_key = ANY(%(keys)s) ORDER BY r.seq;

-- name: skip_run
UPDATE runs SET status = 'skipped', reason = %(reason)s, superseded_by = %(superseded_by)s,
                finished_at = %(now)s,
                spec = hookrunner_ended_spec(spec),
                concurrency_key = hookrunner_ended_key(spec, concurrency_key)
WHERE id = %(id)s AND status = 'queued';

-- name: repoint_superseded
-- Run `by` (of a replace/coalesce key) starts: the runs skipped on the way to it name it,
-- not each other. Under a burst each claim supersedes the waiting run again, so a skipped run
-- named the next waiting run, itself skipped later: the chain of skipped runs that leads to
-- `by` is followed back (each step by the superseded_by index) and everything naming one of
-- them (skipped, or a replaced run that ended canceled) names `by`. Once per run that starts,
-- over its own burst only: runs that ran end a chain.
WITH RECURSIVE chain(id) AS (
    SELECT id FROM runs WHERE superseded_by = %(by)s AND status = 'skipped'
    UNION
    SELECT r.id FROM runs r JOIN chain c ON r.superseded_by = c.id WHERE r.status = 'skipped'
)
UPDATE runs SET superseded_by = %(by)s, reason = replace(reason, superseded_by, %(by)s)
WHERE id IN (SELECT r.id FROM chain c JOIN runs r ON r.superseded_by = c.id
             WHERE r.status IN ('skipped', 'canceled'));

-- name: supersede_waiting
-- A replace/coalesce key's older runs waiting for a retry (concurrency.Decision.supersede).
UPDATE runs SET status = 'skipped', reason = %(reason)s, superseded_by = %(id)s,
                finished_at = %(now)s,
                spec = hookrunner_ended_spec(spec),
                concurrency_key = hookrunner_ended_key(spec, concurrency_key)
WHERE status = 'queued' AND concurrency_key = %(key)s AND seq < %(seq)s
  AND next_attempt_at > %(now)s
RETURNING id, rule, delivery_id, attempt, reason;

-- name: lock_run
SELECT id FROM runs WHERE id = %(id)s FOR UPDATE;

-- name: flag_cancel
-- %(by)s is the run replacing it (policy replace), NULL for a cancel request.
UPDATE runs SET cancel_requested = TRUE, superseded_by = COALESCE(%(by)s, superseded_by)
WHERE id = %(id)s AND status = 'running';

-- name: start_run
UPDATE runs SET status = 'running', attempt = attempt + 1, started_at = %(now)s,
                finished_at = NULL, exit_code = NULL, reason = '', lease_owner = %(node)s,
                lease_expires = %(lease_expires)s
WHERE id = %(id)s AND status = 'queued';

-- name: insert_attempt
INSERT INTO attempts (run_id, attempt, node, status, started_at)
VALUES (%(run_id)s, %(attempt)s, %(node)s, 'running', %(now)s)
ON CONFLICT (run_id, attempt) DO UPDATE
SET node = EXCLUDED.node, status = 'running', started_at = EXCLUDED.started_at,
    finished_at = NULL, exit_code = NULL, reason = '';

-- name: renew
UPDATE runs SET lease_expires = %(lease_expires)s
WHERE id = ANY(%(ids)s) AND status = 'running' AND lease_owner = %(node)s
RETURNING id;

-- name: finish_attempt
-- After the run's own statement (which locks its row): a replaced run's reason names the run
-- its superseded_by holds now, as the run's does.
UPDATE attempts SET status = %(outcome)s, exit_code = %(exit_code)s,
                    reason = CASE WHEN %(replaced_by)s::text IS NULL THEN %(reason)s
                                  ELSE replace(%(reason)s, %(replaced_by)s, COALESCE(
                                      (SELECT superseded_by FROM runs WHERE id = %(run_id)s),
                                      %(replaced_by)s)) END,
                    finished_at = %(finished_at)s, log = COALESCE(%(log)s, log)
WHERE run_id = %(run_id)s AND node = %(node)s AND status = 'running'
  AND attempt = COALESCE(%(attempt)s::integer, attempt);

-- name: finish_run
-- `replaced_by`: the run the dispatcher's reason names; a newer replacer may have taken its
-- place in superseded_by since it read it (flag_cancel), and the reason names that one.
UPDATE runs SET status = %(outcome)s, exit_code = %(exit_code)s,
                reason = CASE WHEN %(replaced_by)s::text IS NULL OR superseded_by IS NULL
                              THEN %(reason)s
                              ELSE replace(%(reason)s, %(replaced_by)s, superseded_by) END,
                outputs = %(outputs)s::jsonb, finished_at = %(finished_at)s, lease_expires = NULL,
                -- replaced (see flag_cancel) only if the cancel is how it ended
                superseded_by = CASE WHEN %(outcome)s = 'canceled' THEN superseded_by END,
                spec = hookrunner_ended_spec(spec),
                concurrency_key = hookrunner_ended_key(spec, concurrency_key)
WHERE id = %(run_id)s AND status = 'running' AND lease_owner = %(node)s
  AND attempt = COALESCE(%(attempt)s::integer, attempt)
  AND (%(expired_by)s::float8 IS NULL OR lease_expires < %(expired_by)s);

-- name: requeue_run
-- Never a run whose cancel was asked for (or that was replaced): cancel_retry ends it.
UPDATE runs SET status = 'queued', exit_code = %(exit_code)s, reason = %(reason)s,
                outputs = %(outputs)s::jsonb, next_attempt_at = %(retry_at)s,
                lease_owner = NULL, lease_expires = NULL, superseded_by = NULL
WHERE id = %(run_id)s AND status = 'running' AND lease_owner = %(node)s
  AND NOT cancel_requested AND attempt = COALESCE(%(attempt)s::integer, attempt)
  AND (%(expired_by)s::float8 IS NULL OR lease_expires < %(expired_by)s);

-- name: cancel_retry
UPDATE runs SET status = 'canceled', exit_code = %(exit_code)s, outputs = %(outputs)s::jsonb,
                finished_at = %(finished_at)s, lease_expires = NULL,
                reason = CASE WHEN superseded_by IS NULL THEN %(cancel_reason)s
                              ELSE 'canceled: replaced by run ' || superseded_by END,
                spec = hookrunner_ended_spec(spec),
                concurrency_key = hookrunner_ended_key(spec, concurrency_key)
WHERE id = %(run_id)s AND status = 'running' AND lease_owner = %(node)s AND cancel_requested
  AND attempt = COALESCE(%(attempt)s::integer, attempt)
  AND (%(expired_by)s::float8 IS NULL OR lease_expires < %(expired_by)s);

-- name: expired
SELECT r.*, d.hook FROM runs r JOIN deliveries d ON d.id = r.delivery_id
WHERE r.status = 'running' AND r.lease_expires < %(now)s ORDER BY r.seq;

-- name: running_on_node
SELECT r.*, d.hook FROM runs r JOIN deliveries d ON d.id = r.delivery_id
WHERE r.status = 'running' AND r.lease_owner = %(node)s ORDER BY r.seq;

-- name: cancel_queued
UPDATE runs SET status = 'canceled',
    reason = CASE WHEN attempt > 0 THEN %(retry_reason)s ELSE %(reason)s END, finished_at = %(now)s,
                spec = hookrunner_ended_spec(spec),
                concurrency_key = hookrunner_ended_key(spec, concurrency_key)
WHERE id = %(id)s AND status = 'queued';

-- name: run_status
SELECT status FROM runs WHERE id = %(id)s;

-- name: cancel_requests
SELECT id, superseded_by FROM runs WHERE status = 'running' AND lease_owner = %(node)s AND cancel_requested;

-- name: known_runs
-- Which of a list of run ids are still stored (retention's run dirs).
SELECT id FROM runs WHERE id = ANY(%(ids)s);

-- name: get_run
SELECT r.*, d.hook FROM runs r JOIN deliveries d ON d.id = r.delivery_id WHERE r.id = %(id)s;

-- name: list_runs
-- The filters given are added by the store (store/_rows.listing): `(:x IS NULL OR col = :x)`
-- would keep SQLite from its indexes, and PostgreSQL's generic plans too.
-- A listing carries a rendered action of at most 64 KiB (one forwarding a whole payload was
-- megabytes in each listing, and in the server's memory): a larger one is its size, with
-- its hidden-key mark (redact.HIDDEN_KEY); store/base.LISTED_SPEC says so for the memory store.
SELECT r.seq, r.id, r.delivery_id, r.rule, r.action,
       CASE WHEN octet_length(r.spec::text) <= 65536 THEN r.spec
            ELSE json_build_object('omitted_bytes', octet_length(r.spec::text), 'hidden_concurrency_key',
                                    coalesce(r.spec -> 'hidden_concurrency_key', 'false')) END AS spec,
       r.status, r.attempt, r.concurrency_key, r.policy, r.timeout, r.max_attempts,
       r.backoff, r.max_backoff, r.retry_on, r.created_at, r.next_attempt_at, r.started_at,
       r.finished_at, r.exit_code, r.reason, r.outputs, r.lease_owner, r.lease_expires,
       r.cancel_requested, r.superseded_by, d.hook
FROM runs r JOIN deliveries d ON d.id = r.delivery_id
{where} ORDER BY r.seq DESC LIMIT {limit};

-- name: attempts
SELECT * FROM attempts WHERE run_id = %(run_id)s ORDER BY attempt;

-- name: get_log
SELECT log FROM attempts WHERE run_id = %(run_id)s AND attempt = %(attempt)s;

-- name: log_length
SELECT char_length(log) AS size FROM attempts WHERE run_id = %(run_id)s AND attempt = %(attempt)s;

-- name: get_log_head
SELECT substr(log, 1, %(chars)s) AS head, length(log) > %(chars)s AS more FROM attempts
WHERE run_id = %(run_id)s AND attempt = %(attempt)s;

-- name: get_delivery
SELECT d.*, v.verifier FROM deliveries d LEFT JOIN delivery_verifiers v ON v.delivery_id = d.id
WHERE d.id = %(id)s;

-- name: list_deliveries
SELECT d.*, v.verifier FROM deliveries d LEFT JOIN delivery_verifiers v ON v.delivery_id = d.id
{where} ORDER BY received_at DESC, id DESC LIMIT {limit};

-- name: counts
SELECT status, count(*) AS n FROM runs GROUP BY status;

-- name: count_queued
SELECT count(*) AS n FROM runs WHERE status = 'queued';

-- name: next_due
SELECT min(next_attempt_at) AS due FROM runs WHERE status = 'queued';

-- name: prune_lock
-- At most `chunk` deliveries per transaction: a long history is deleted in many short
-- transactions, so accepts are never held up behind one huge delete. Locked in a statement
-- of their own, before `prune` deletes them: a replay adding runs to one of them holds its
-- row (the runs' foreign key) until it commits, and is skipped here; one that comes after
-- waits for the delete and finds its delivery gone. In one statement the delete's snapshot,
-- taken before the replay committed, did not see its runs, and the cascade removed the runs
-- the replay had been answered for. (SKIP LOCKED: two nodes' prunes never wait for, nor
-- deadlock on, each other's rows.)
SELECT id FROM deliveries
WHERE received_at < %(before)s
  AND NOT EXISTS (
    SELECT 1 FROM runs r WHERE r.delivery_id = deliveries.id
      AND (r.status IN ('queued', 'running') OR r.finished_at IS NULL
           OR r.finished_at >= %(before)s)
  )
LIMIT %(chunk)s
FOR UPDATE SKIP LOCKED;

-- name: prune
-- The rows prune_lock locked, asked again with this statement's snapshot (taken after the
-- lock): runs a replay committed meanwhile keep their delivery.
DELETE FROM deliveries
WHERE id = ANY(%(ids)s)
  AND NOT EXISTS (
    SELECT 1 FROM runs r WHERE r.delivery_id = deliveries.id
      AND (r.status IN ('queued', 'running') OR r.finished_at IS NULL
           OR r.finished_at >= %(before)s)
  );
