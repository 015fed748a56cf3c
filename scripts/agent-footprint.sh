#!/usr/bin/env bash
# The agent's own footprint and the cost of `vigil run` around `true` (BENCHMARKS.md, issue 16).
# Starts a throwaway host on loopback, runs `vigil agent` at a 1 s interval for SECONDS
# (default 60) and reads its RSS and CPU time from /proc, then times `vigil run -- true`
# N times (default 20) with the host up and with it unreachable. Usage:
#   cargo build --release -p vigil && scripts/agent-footprint.sh [target/release/vigil] [SECONDS] [N]
set -euo pipefail
vigil="$(realpath "${1:-target/release/vigil}")"
seconds="${2:-60}"
runs="${3:-20}"
dir="$(mktemp -d)"
port=$((20000 + RANDOM % 20000))
token="footprint-admin-token-0123456789abcdef"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
cd "$dir"
cat > vigil.toml <<TOML
[server]
listen = "127.0.0.1:$port"
[storage]
url = "sqlite://$dir/vigil.db"
[admin]
token = "$token"
[rate_limit]
per_server_per_minute = 0
per_ip_per_minute = 0
TOML
"$vigil" serve --config vigil.toml >serve.log 2>&1 &
url="http://127.0.0.1:$port"
until curl -fs "$url/readyz" >/dev/null 2>&1; do sleep 0.2; done
"$vigil" keygen --out agent.key >/dev/null
for id in footprint-agent footprint-job; do
    VIGIL_ADMIN_TOKEN="$token" "$vigil" server add "$id" --key agent.key --url "$url" >/dev/null
done
cat > agent.toml <<TOML
url = "$url"
server_id = "footprint-agent"
interval_seconds = 1
TOML
"$vigil" agent --config agent.toml >agent.log 2>&1 &
agent=$!
sleep 2
ticks() { awk '{print $14 + $15}' "/proc/$agent/stat"; }
hz="$(getconf CLK_TCK)"
before="$(ticks)"
sleep "$seconds"
after="$(ticks)"
rss="$(awk '/VmRSS/ {print $2}' "/proc/$agent/status")"
hwm="$(awk '/VmHWM/ {print $2}' "/proc/$agent/status")"
cpu_us=$(((after - before) * 1000000 / hz))
echo "agent: ${seconds} s at 1 beat/s: RSS ${rss} KiB (peak ${hwm} KiB), CPU $((cpu_us / 1000)) ms, $((cpu_us / seconds)) µs per beat"
kill -TERM "$agent"; wait "$agent" && echo "agent: SIGTERM -> exit 0, $(grep -c 'goodbye accepted' agent.log) goodbye accepted"
time_runs() {
    local label="$1"; shift
    local start end
    start="$(date +%s%N)"
    for _ in $(seq "$runs"); do "$vigil" run "$@" --key agent.key --server-id footprint-job -- true; done
    end="$(date +%s%N)"
    echo "vigil run -- true, $label: $(((end - start) / runs / 1000)) µs wall per run (mean of $runs)"
}
time_runs "host up" --url "$url"
time_runs "host unreachable, 1 attempt" --url "http://127.0.0.1:1" --attempts 1 2>/dev/null
