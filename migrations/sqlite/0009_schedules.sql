-- Schedules (issue 16): when an operator expects a server to report (a cron job, a backup),
-- set through the admin API and handed to the policy with the server's facts.
--
-- A JSON object, NULL for an unscheduled server: {"period_seconds": N} or
-- {"cron": "0 3 * * *", "tz": "Europe/Berlin"}, with "grace_seconds" and optionally
-- "max_run_seconds". Set by operators only (never by the engine's snapshot commit); every
-- change is audited in server_audit (action `schedule`).

ALTER TABLE servers ADD COLUMN schedule TEXT;
