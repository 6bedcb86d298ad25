-- Deliveries of one hook, newest first (GET /api/deliveries?hook=, the console's hook filter):
-- without it, every delivery of the history is read to find a rare hook's.
CREATE INDEX deliveries_hook ON deliveries (hook, received_at);
