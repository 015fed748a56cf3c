-- Throughput (issue 6): fewer B-trees written per heartbeat. Every index on a table the writer
-- touches per heartbeat is one more random page per heartbeat in the WAL and in the checkpoint.
-- Measured with `vigil bench` (10k servers, 64 connections): dropping these two took accepted
-- heartbeats/s from ≈3.6k to ≈5.1k on the same machine.

-- The engine keeps every deadline in memory (loaded at start-up); nothing queries this index,
-- yet each heartbeat moved the server's entry in it.
DROP INDEX servers_next_check;

-- History reads (replay, rebuilds, backtests) find a server's window through the
-- UNIQUE (server_id, seq) index instead: the window starts after the newest heartbeat received
-- before it (see store/common.rs).
DROP INDEX heartbeats_server_received;
