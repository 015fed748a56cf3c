-- The trust edge (issue 15).
--
-- Commands are delivered at least once: every new signed heartbeat of the server carries each
-- unexpired command that has no signed result yet, so a delivery lost on the way (or answered
-- to a request that was not the agent) is repeated until the agent answers. `delivered_at_ms`
-- stays the first delivery; `delivery_count` counts them (command_log records the first only,
-- so a week-long TTL cannot grow the log by a row per heartbeat).
ALTER TABLE commands ADD COLUMN delivery_count INTEGER NOT NULL DEFAULT 0;
UPDATE commands SET delivery_count = 1 WHERE delivered_at_ms IS NOT NULL;
CREATE INDEX commands_unanswered ON commands (server_id, issued_at_ms) WHERE result_at_ms IS NULL;
