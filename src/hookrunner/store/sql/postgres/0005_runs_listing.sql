-- Runs of one status or rule, newest first (the console's status filter, GET /api/runs?status=
-- or ?rule=): without them a million-run history was read and sorted for each page.
CREATE INDEX runs_status_seq ON runs (status, seq);
CREATE INDEX runs_rule_seq ON runs (rule, seq);
