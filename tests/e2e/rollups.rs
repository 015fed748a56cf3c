//! Rollups: the hourly and daily buckets the engine appends as outcomes are committed equal a
//! replay of the stored history over the same window, and `GET /v1/servers/{id}/uptime`
//! serves them.
//!
//! Nine days cannot pass in a test, so the history is written the way the writer writes it,
//! with the real fold through the real compiled policy at past receive times and committed
//! batch by batch through a second store on the same database; the host under test then reads
//! it back over HTTP.

use serde_json::json;
use vigil::engine::fold::{FoldEffects, catch_up, fold_heartbeat, fold_rejection};
use vigil::engine::replay::replay;
use vigil::engine::rollup::{Window, report};
use vigil::ingest::decode::decode_stored;
use vigil::store::{
    AuthKind, HeartbeatRow, RejectionRow, RollupRow, RollupSpan, SnapshotRow, Store, WriteBatch,
};
use vigil_tests::{Agent, TestApp, TestBackend};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// What happens at one instant of the written history.
enum Event {
    Beat,
    Rejection,
}

/// Nine days: two days of beats every 15 minutes, a day and a half of silence, a day of beats
/// with a refused request every two hours, three days of silence, then twelve hours of beats.
fn schedule(start: i64) -> Vec<(i64, Event)> {
    let mut events = Vec::new();
    let beats = |from: i64, hours: i64, rejections: bool, events: &mut Vec<(i64, Event)>| {
        let mut t = from;
        while t < from + hours * HOUR {
            events.push((t, Event::Beat));
            if rejections && (t - from) % (2 * HOUR) == 0 {
                events.push((t + 7 * MINUTE, Event::Rejection));
            }
            t += 15 * MINUTE;
        }
    };
    beats(start, 48, false, &mut events);
    beats(start + 84 * HOUR, 24, true, &mut events);
    beats(start + 180 * HOUR, 12, false, &mut events);
    events
}

fn by_span(rows: &[RollupRow], span: RollupSpan) -> Vec<RollupRow> {
    let mut out: Vec<RollupRow> = rows.iter().filter(|r| r.span == span).cloned().collect();
    out.sort_by_key(|r| r.start_ms);
    out
}

async fn rollups_equal_a_replay_of_history_over_the_same_window() {
    let app = TestApp::spawn().await;
    let agent = Agent::new("rolled");
    assert!(app.register(&agent).await.status.is_success());
    // A second store on the host's database writes the past, as the host's writer would have.
    let url = TestBackend::current().database_url(app.dir.path()).await;
    let writer = Store::open(&url, 2).await.expect("opens");
    let policy = app.state.engine.policy().clone();
    let mut server = writer
        .get_server("rolled")
        .await
        .expect("reads")
        .expect("registered");

    let now = vigil_tests::now_ms();
    // 30 minutes past a UTC midnight nine days before the last one at least two hours ago, so
    // buckets close mid-history; the history is caught up to 30 minutes past that last
    // midnight, which closes exactly nine days whatever the time of day the test runs at.
    let start = (now - 2 * HOUR).div_euclid(DAY) * DAY - 9 * DAY + 30 * MINUTE;
    let caught_up_to = start + 9 * DAY;
    assert!(caught_up_to < now - HOUR);
    let events = schedule(start);
    let (mut beats, mut rejections) = (0, 0);
    let mut batch = WriteBatch::default();
    let mut closed = Vec::new();
    for (i, (at, event)) in events.iter().enumerate() {
        let mut effects = FoldEffects::default();
        match event {
            Event::Beat => {
                let body = agent.heartbeat_at(*at - 200, json!({"interval_seconds": 900}));
                let text = body.to_string();
                let decoded = decode_stored(&text).expect("decodes");
                fold_heartbeat(
                    &policy,
                    &mut server,
                    *at,
                    &decoded,
                    vigil::store::AuthKind::Signature,
                    &mut effects,
                );
                batch.heartbeats.push(HeartbeatRow {
                    server_id: "rolled".into(),
                    seq: server.snapshot.event_seq,
                    received_at_ms: *at,
                    sent_at_ms: decoded.sent_at_ms,
                    key_version: 1,
                    signature: decoded.signature.clone().expect("signed"),
                    body: text,
                    policy_digest: policy.digest().to_owned(),
                    auth: AuthKind::Signature,
                    original_body: None,
                });
                beats += 1;
            }
            Event::Rejection => {
                fold_rejection(&policy, &mut server, *at, "bad_signature", &mut effects);
                batch.rejections.push(RejectionRow {
                    received_at_ms: *at,
                    code: "bad_signature".into(),
                    http_status: 401,
                    detail: "signature does not verify".into(),
                    claimed_server_id: Some("rolled".into()),
                    seq: Some(server.snapshot.event_seq),
                    source_ip: None,
                    body_sha256: None,
                });
                rejections += 1;
            }
        }
        assert!(effects.errors.is_empty(), "{:?}", effects.errors);
        batch.transitions.extend(effects.transitions);
        batch.rollups.extend(effects.rollups);
        // Group commits of varying sizes, as the writer's batches are.
        if i % 7 == 6 || i + 1 == events.len() {
            if i + 1 == events.len() {
                let mut effects = FoldEffects::default();
                catch_up(&policy, &mut server, caught_up_to, &mut effects);
                batch.transitions.extend(effects.transitions);
                batch.rollups.extend(effects.rollups);
            }
            batch.snapshots.push(SnapshotRow {
                server_id: "rolled".into(),
                snapshot: server.snapshot.clone(),
            });
            closed.extend(batch.rollups.iter().cloned());
            writer
                .commit(&std::mem::take(&mut batch))
                .await
                .expect("commits");
        }
    }
    writer.close().await;

    // Stored as committed.
    let stored_hours = app
        .store
        .rollups("rolled", RollupSpan::Hour, 0)
        .await
        .expect("hours");
    let stored_days = app
        .store
        .rollups("rolled", RollupSpan::Day, 0)
        .await
        .expect("days");
    assert_eq!(stored_hours, by_span(&closed, RollupSpan::Hour));
    assert_eq!(stored_days, by_span(&closed, RollupSpan::Day));
    let live = app
        .store
        .get_server("rolled")
        .await
        .expect("reads")
        .expect("exists");

    // Replaying the stored history through the same policy closes the same buckets and leaves
    // the same open ones.
    let history = app.store.history("rolled", 0).await.expect("history");
    assert_eq!(history.len(), beats + rejections);
    let (rebuilt, effects) =
        replay(&policy, &live, &history, live.snapshot.evaluated_at_ms).expect("replays");
    assert_eq!(by_span(&effects.rollups, RollupSpan::Hour), stored_hours);
    assert_eq!(by_span(&effects.rollups, RollupSpan::Day), stored_days);
    assert_eq!(rebuilt.snapshot.rollup, live.snapshot.rollup);
    assert!(live.snapshot.rollup.is_some());

    // Not a trivial history: every day from the first to yesterday closed, with online and
    // offline time, and every beat and rejection counted once.
    assert_eq!(stored_days.len(), 9, "{stored_days:?}");
    assert!(
        stored_days
            .iter()
            .any(|d| d.sums.online_ms > 0 && d.sums.online_ms < d.sums.observed_ms),
        "some day was partly offline: {stored_days:?}"
    );
    let open = live.snapshot.rollup.clone().expect("open");
    let counted = |f: fn(&vigil::store::RollupSums) -> i64| {
        stored_days.iter().map(|d| f(&d.sums)).sum::<i64>() + f(&open.day) + f(&open.hour)
    };
    assert_eq!(counted(|s| s.beats), beats as i64);
    assert_eq!(counted(|s| s.rejections), rejections as i64);
    assert_eq!(
        stored_hours.iter().map(|h| h.sums.beats).sum::<i64>() + open.hour.beats,
        beats as i64
    );

    // The API serves the same figures as the replay over the same window.
    for (window, rows) in [
        (Window::Days(90), by_span(&effects.rollups, RollupSpan::Day)),
        (Window::Days(7), by_span(&effects.rollups, RollupSpan::Day)),
        (Window::Hours24, by_span(&effects.rollups, RollupSpan::Hour)),
    ] {
        let answer = app
            .get(&format!(
                "/v1/servers/rolled/uptime?window={}",
                window.as_str()
            ))
            .await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        let to = answer.body["to"]
            .as_str()
            .and_then(vigil::clock::parse_rfc3339_ms)
            .expect("to");
        let expected = report(window, to, &rows, &rebuilt.snapshot);
        let buckets = answer.body["buckets"].as_array().expect("buckets");
        assert_eq!(buckets.len(), expected.buckets.len());
        for (got, want) in buckets.iter().zip(&expected.buckets) {
            assert_eq!(
                got["start"],
                json!(vigil::clock::format_rfc3339_ms(want.start_ms))
            );
            assert_eq!(got["beats"], json!(want.sums.beats));
            assert_eq!(got["rejections"], json!(want.sums.rejections));
            assert_eq!(got["uptime_percent"], json!(want.sums.uptime_percent()));
            assert_eq!(got["quality"], json!(want.sums.quality()));
        }
        assert_eq!(
            answer.body["uptime_percent"],
            json!(expected.total.uptime_percent())
        );
        assert_eq!(answer.body["beats"], json!(expected.total.beats));
    }
    let week = app.get("/v1/servers/rolled/uptime?window=90d").await;
    assert_eq!(week.body["beats"], json!(beats));
    let uptime = week.body["uptime_percent"].as_f64().expect("a figure");
    assert!(uptime > 5.0 && uptime < 95.0, "{uptime}");

    // Rows are history: the database refuses to change them.
    assert!(app.execute("UPDATE rollups SET beats = 0").await.is_err());
    assert!(app.execute("DELETE FROM rollups").await.is_err());
}

async fn the_uptime_route_counts_live_beats_and_refuses_bad_windows() {
    let app = TestApp::spawn().await;
    let agent = Agent::new("live-rollup");
    app.register(&agent).await;
    for _ in 0..3 {
        let hb = agent.heartbeat(json!({"interval_seconds": 30}));
        assert_eq!(app.post_heartbeat(&hb).await.status, 202);
    }
    let day = app.get("/v1/servers/live-rollup/uptime").await;
    assert_eq!(day.status, 200, "{:?}", day.body);
    assert_eq!(day.body["window"], "24h");
    assert_eq!(day.body["beats"], 3);
    assert_eq!(day.body["buckets"].as_array().map(Vec::len), Some(24));
    assert_eq!(day.body["buckets"][23]["beats"], 3);
    for bad in ["1y", "", "24H", "7d%00"] {
        let answer = app
            .get(&format!("/v1/servers/live-rollup/uptime?window={bad}"))
            .await;
        assert_eq!(answer.status, 422, "{bad}");
        assert_eq!(answer.content_type, "application/problem+json");
        assert_eq!(answer.code(), "invalid_window");
    }
    let extra = app
        .get("/v1/servers/live-rollup/uptime?window=7d&from=0")
        .await;
    assert_eq!(extra.status, 422);
    let unknown = app.get("/v1/servers/nobody/uptime?window=7d").await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.code(), "unknown_server");
}

vigil_tests::on_both_backends!(
    rollups_equal_a_replay_of_history_over_the_same_window,
    the_uptime_route_counts_live_beats_and_refuses_bad_windows,
);
