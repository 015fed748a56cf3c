-- Throughput (issue 6), PostgreSQL: the engine keeps every deadline in memory (each host loads
-- them at start-up and re-reads rows it locks); nothing queries this index, yet each heartbeat
-- moved the server's entry in it. (SQLite's 0005 also drops heartbeats_server_received; here it
-- stays, since PostgreSQL's write path is not the limit.)
DROP INDEX servers_next_check;
