-- The runs that name a run as what superseded them: when that run is superseded in turn (a
-- burst on a replace/coalesce key), they are pointed at the newer one (repoint_superseded),
-- one indexed lookup per skipped run instead of a scan of the whole history.
CREATE INDEX IF NOT EXISTS runs_superseded_by ON runs (superseded_by) WHERE superseded_by IS NOT NULL;
