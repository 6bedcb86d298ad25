-- The verifier that checked a delivery (`github`, `token`, `none`, ...), as its hook had it
-- then: the console showed the hook's current one, so a delivery taken while a hook was
-- briefly `none` read as signed once it was changed back. Rows from before: NULL, unknown.
ALTER TABLE deliveries ADD COLUMN verifier TEXT;
