-- The query parameters of a delivery (JSON list of [name, value], secrets redacted), so a
-- replay evaluates `query` as the original did. Rows from before: none, an empty query.
ALTER TABLE deliveries ADD COLUMN query_params TEXT NOT NULL DEFAULT '[]';
