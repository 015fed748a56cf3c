//! `vigil bench` as users run it: the real binary spawns a real host, registers servers,
//! sends pre-signed heartbeats and reports what it saw.

use serde_json::Value;
use vigil_tests::Cli;

fn bench(extra: &[&str]) -> Value {
    let args = [
        "bench",
        "--spawn",
        "--servers",
        "20",
        "--connections",
        "4",
        "--duration",
        "1",
        "--json",
    ];
    let run = Cli::new().run([&args[..], extra].concat());
    assert!(run.success(), "bench failed: {}", run.stderr);
    serde_json::from_str(&run.stdout).expect("a JSON report")
}

fn check(report: &Value) {
    let requests = report["requests"].as_u64().expect("requests");
    assert!(requests > 0, "{report}");
    // Every answer was a 202: each heartbeat was verified, folded and committed.
    assert_eq!(
        report["status_counts"],
        serde_json::json!({ "202": requests }),
        "{report}"
    );
    assert!(report["accepted_per_second"].as_f64().expect("rate") > 0.0);
    for q in ["p50", "p95", "p99", "max"] {
        assert!(report["latency_ms"][q].as_f64().expect(q) > 0.0, "{report}");
    }
    // It started the host itself, so it measured it.
    assert!(report["host_cpu_cores"].as_f64().is_some(), "{report}");
    assert!(
        report["host_peak_rss_mib"].as_f64().expect("rss") > 1.0,
        "{report}"
    );
}

#[test]
fn closed_loop_bench_against_a_spawned_host_gets_only_202s() {
    let report = bench(&["--max-rate", "200"]);
    check(&report);
    assert_eq!(report["target_rate"], Value::Null);
}

#[test]
fn open_loop_bench_sends_at_most_its_rate() {
    let report = bench(&["--rate", "40"]);
    check(&report);
    assert_eq!(report["target_rate"], 40);
    // 40/s for one second, spread over four connections: never more than scheduled.
    assert!(report["requests"].as_u64().expect("requests") <= 40 + 4);
}

#[test]
fn both_routes_bench_reports_the_signed_and_the_healthchecks_route() {
    let report = bench(&["--max-rate", "200", "--route", "both"]);
    let [v1, healthchecks] = report.as_array().expect("two reports").as_slice() else {
        panic!("two reports: {report}");
    };
    check(v1);
    assert_eq!(v1["route"], "v1");
    assert_eq!(healthchecks["route"], "healthchecks");
    let requests = healthchecks["requests"].as_u64().expect("requests");
    assert!(requests > 0, "{healthchecks}");
    // Every ping was admitted by its token and answered Healthchecks' 200 `OK`.
    assert_eq!(
        healthchecks["status_counts"],
        serde_json::json!({ "200": requests }),
        "{healthchecks}"
    );
    assert!(healthchecks["accepted_per_second"].as_f64().expect("rate") > 0.0);
}
