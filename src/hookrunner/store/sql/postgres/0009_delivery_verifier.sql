-- The verifier that checked a delivery (`github`, `token`, `none`, ...), as its hook had it
-- then: the console showed the hook's current one, so a delivery taken while a hook was
-- briefly `none` read as signed once it was changed back. Deliveries from before, and those
-- a node of the version before accepts meanwhile, have none: unknown.
-- A table of its own, not a column of `deliveries`: a node of the version before reads
-- deliveries with `SELECT *` as prepared statements, which PostgreSQL refuses once the
-- table's columns change ("cached plan must not change result type"), and its runs that
-- read their delivery failed until it was upgraded too.
CREATE TABLE IF NOT EXISTS delivery_verifiers (
    delivery_id TEXT PRIMARY KEY REFERENCES deliveries (id) ON DELETE CASCADE,
    verifier    TEXT NOT NULL
);
