-- What a server's agent says about the machine (issue 17, HomelabCmd agents): the latest
-- `hostname`, `os_info` and metrics a HomelabCmd heartbeat carried, applied to the server
-- record as HomelabCmd does. A JSON object, NULL until such a heartbeat arrives:
-- {"hostname": "...", "os_info": {...}, "metrics": {...}, "reported_at_ms": N}.
-- Written by the compat route after its heartbeat is accepted (never by the engine's
-- snapshot commit); each heartbeat row keeps what was sent, so this is a cache of the latest.

ALTER TABLE servers ADD COLUMN host_info TEXT;
