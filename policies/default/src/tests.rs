//! Behaviour of the whole fold, driven through `Policy::evaluate` exactly as the host calls it.

use vigil_policy_sdk::{
    Assessment, AuthKind, Confidence, Event, Facts, Heartbeat, ParamValue, Params, Policy,
    Rejection, Status,
};

use crate::{DefaultPolicy, HISTORY_WINDOW_SECONDS, STATE_VERSION};

/// 2026-01-01T00:00:00Z: minute-aligned.
const T0: i64 = 1_767_225_600_000;
const SEC: i64 = 1000;
const MIN: i64 = 60 * SEC;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

/// One server's events folded one after another, as the host does.
struct Server {
    params: Params,
    facts: Facts,
    state: Option<Vec<u8>>,
}

impl Server {
    /// Registered at `registered_at_ms`, verified.
    fn registered_at(registered_at_ms: i64) -> Self {
        Self {
            params: Params::defaults(&DefaultPolicy::describe().params),
            facts: Facts {
                server_id: "eu-island-01".into(),
                is_verified: true,
                key_version: 1,
                registered_at_ms,
                schedule: None,
            },
            state: None,
        }
    }

    /// Registered two days before T0: past any "new server" period.
    fn established() -> Self {
        Self::registered_at(T0 - 2 * DAY)
    }

    fn try_event(&mut self, now_ms: i64, event: Event) -> Result<Assessment, String> {
        let evaluation = DefaultPolicy::evaluate(
            &self.params,
            &self.facts,
            self.state.as_deref(),
            now_ms,
            &event,
        )?;
        assert_finite(&evaluation.assessment);
        self.state = Some(evaluation.state);
        Ok(evaluation.assessment)
    }

    fn event(&mut self, now_ms: i64, event: Event) -> Assessment {
        self.try_event(now_ms, event).expect("evaluation succeeds")
    }

    fn heartbeat(&mut self, now_ms: i64) -> Assessment {
        self.heartbeat_with(now_ms, |_| {})
    }

    fn heartbeat_with(&mut self, now_ms: i64, edit: impl FnOnce(&mut Heartbeat)) -> Assessment {
        let mut heartbeat = Heartbeat {
            received_at_ms: now_ms,
            sent_at_ms: now_ms,
            signed: true,
            ..Heartbeat::default()
        };
        edit(&mut heartbeat);
        self.event(now_ms, Event::Heartbeat(heartbeat))
    }

    fn tick(&mut self, now_ms: i64) -> Assessment {
        self.event(now_ms, Event::Tick)
    }

    fn reject(&mut self, now_ms: i64, code: &str) -> Assessment {
        let rejection = Rejection {
            received_at_ms: now_ms,
            code: code.into(),
        };
        self.event(now_ms, Event::Rejected(rejection))
    }
}

fn assert_finite(assessment: &Assessment) {
    assert!((0.0..=100.0).contains(&assessment.uptime_percent));
    assert!((0.0..=100.0).contains(&assessment.quality_score));
    for score in &assessment.scores {
        assert!(score.value.is_finite(), "{score:?}");
    }
}

fn score(assessment: &Assessment, name: &str) -> f64 {
    assessment.score(name).expect("score present")
}

fn has_signal(assessment: &Assessment, signal: &str) -> bool {
    assessment.signals.iter().any(|s| s == signal)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn describe_declares_every_param_with_a_valid_default() {
    let info = DefaultPolicy::describe();
    assert_eq!(info.name, "default");
    assert_eq!(info.version, "1.3.0");
    assert_eq!(info.history_window_seconds, 86_400 + 1_209_600);
    assert_eq!(HISTORY_WINDOW_SECONDS, info.history_window_seconds);
    assert_eq!(info.params.len(), 18);
    for spec in &info.params {
        assert!(!spec.description.is_empty(), "{}", spec.name);
    }
    // Every default validates.
    let mut server = Server::established();
    server.params = Params::defaults(&info.params);
    server.heartbeat(T0);
}

#[test]
fn unknown_then_online_then_offline_by_a_tick_at_exactly_the_deadline() {
    let mut server = Server::established();
    let first = server.tick(T0 - MIN);
    assert_eq!(first.status, Status::Unknown);
    assert_eq!(first.confidence, Confidence::Yellow);
    assert_eq!(first.next_check_at_ms, None);
    assert_eq!(first.uptime_percent, 0.0);

    let online = server.heartbeat(T0);
    assert_eq!(online.status, Status::Online);
    assert_eq!(online.confidence, Confidence::Green);
    assert!(has_signal(&online, "came-online"));
    assert_eq!(online.next_check_at_ms, Some(T0 + 300 * SEC));

    let just_before = server.tick(T0 + 300 * SEC - 1);
    assert_eq!(just_before.status, Status::Online);
    assert!(just_before.signals.is_empty());

    let at_deadline = server.tick(T0 + 300 * SEC);
    assert_eq!(at_deadline.status, Status::Offline);
    assert_eq!(at_deadline.confidence, Confidence::Red);
    assert!(has_signal(&at_deadline, "went-offline"));
    // Offline with online minutes in the window: rechecked so uptime decays.
    assert_eq!(
        at_deadline.next_check_at_ms,
        Some(T0 + 300 * SEC + 900 * SEC)
    );
    assert_eq!(score(&at_deadline, "flaps_24h"), 1.0);

    // A day later nothing online is left in the window: no more ticks needed.
    let gone = server.tick(T0 + 2 * DAY);
    assert_eq!(gone.status, Status::Offline);
    assert_eq!(gone.uptime_percent, 0.0);
    assert_eq!(gone.next_check_at_ms, None);
    assert!(gone.signals.is_empty(), "went offline only once");
}

#[test]
fn grace_comes_from_the_declared_interval_or_the_mode() {
    let mut server = Server::established();
    let declared = server.heartbeat_with(T0, |hb| hb.interval_seconds = Some(30));
    assert_eq!(declared.next_check_at_ms, Some(T0 + 60 * SEC));
    assert_eq!(score(&declared, "grace_seconds"), 60.0);

    let sleep = server.heartbeat_with(T0 + 30 * SEC, |hb| hb.mode = Some("sleep".into()));
    assert_eq!(sleep.next_check_at_ms, Some(T0 + 30 * SEC + 1800 * SEC));

    let emergency = server.heartbeat_with(T0 + 60 * SEC, |hb| hb.mode = Some("emergency".into()));
    assert_eq!(emergency.next_check_at_ms, Some(T0 + 70 * SEC));
    assert!(has_signal(&emergency, "emergency-mode"));
    let again = server.heartbeat_with(T0 + 65 * SEC, |hb| hb.mode = Some("emergency".into()));
    assert!(!has_signal(&again, "emergency-mode"), "only on entering");

    // A declared interval wins over the mode's.
    let both = server.heartbeat_with(T0 + 70 * SEC, |hb| {
        hb.mode = Some("idle".into());
        hb.interval_seconds = Some(100);
    });
    assert_eq!(both.next_check_at_ms, Some(T0 + 270 * SEC));

    let plain = server.heartbeat(T0 + 80 * SEC);
    assert_eq!(plain.next_check_at_ms, Some(T0 + 380 * SEC));

    server.params = server
        .params
        .clone()
        .with("interval_grace_multiplier", ParamValue::Number(3.0));
    let tripled = server.heartbeat_with(T0 + 90 * SEC, |hb| hb.interval_seconds = Some(10));
    assert_eq!(tripled.next_check_at_ms, Some(T0 + 120 * SEC));
}

#[test]
fn twelve_hours_online_of_a_day_old_server_is_fifty_percent() {
    let mut server = Server::registered_at(T0);
    // A heartbeat a minute from T0 to T0 + 715 min; the last one's 5 min grace ends at 12 h.
    for minute in 0..=715 {
        server.heartbeat(T0 + minute * MIN);
    }
    let a_day_on = server.tick(T0 + 1439 * MIN);
    assert_eq!(a_day_on.status, Status::Offline);
    assert!(close(a_day_on.uptime_percent, 50.0), "{a_day_on:?}");
    assert!(!a_day_on.badges.contains(&"reliable".to_string()));
}

#[test]
fn a_young_servers_window_starts_at_its_first_heartbeat() {
    let mut server = Server::registered_at(T0 - HOUR);
    let first = server.heartbeat(T0);
    assert_eq!(first.uptime_percent, 100.0);
    // Online for minutes 0..=4 (grace 300 s), offline for 5..=10.
    let later = server.tick(T0 + 10 * MIN);
    assert!(close(later.uptime_percent, 5.0 * 100.0 / 11.0), "{later:?}");

    // Registered a whole window ago: judged over the full window, silence counts.
    let mut old = Server::established();
    let first = old.heartbeat(T0);
    assert!(close(first.uptime_percent, 100.0 / 1440.0), "{first:?}");
}

#[test]
fn a_full_day_online_earns_reliable() {
    let mut server = Server::established();
    let mut last = None;
    for half_hour in 0..=50 {
        last = Some(server.heartbeat_with(T0 + half_hour * 30 * MIN, |hb| {
            hb.interval_seconds = Some(1800);
        }));
    }
    let last = last.unwrap();
    assert_eq!(last.uptime_percent, 100.0);
    assert_eq!(last.quality_score, 100.0);
    assert_eq!(
        last.badges,
        vec!["verified".to_string(), "reliable".to_string()]
    );
}

#[test]
fn quality_weighs_uptime_and_activity() {
    let mut server = Server::registered_at(T0);
    let players = server.heartbeat_with(T0, |hb| {
        hb.players_current = Some(35);
        hb.players_capacity = Some(70);
    });
    assert_eq!(score(&players, "activity"), 50.0);
    assert!(close(players.quality_score, 0.7 * 100.0 + 0.3 * 50.0));

    // No players reported: quality is uptime alone.
    let mut quiet = Server::registered_at(T0);
    let none = quiet.heartbeat(T0);
    assert_eq!(score(&none, "activity"), 0.0);
    assert_eq!(none.quality_score, 100.0);

    // Custom weights are normalised by their sum.
    let mut custom = Server::registered_at(T0);
    custom.params = custom
        .params
        .clone()
        .with("weight_uptime", ParamValue::Number(1.0))
        .with("weight_activity", ParamValue::Number(3.0));
    let weighted = custom.heartbeat_with(T0, |hb| {
        hb.players_current = Some(10);
        hb.players_capacity = Some(100);
    });
    assert!(close(weighted.quality_score, (100.0 + 3.0 * 10.0) / 4.0));
}

#[test]
fn flapping_costs_quality_up_to_the_cap() {
    let mut server = Server::registered_at(T0);
    server.heartbeat(T0);
    server.tick(T0 + 5 * MIN); // offline at the deadline: flip 1
    let back = server.heartbeat(T0 + 10 * MIN); // flip 2
    assert!(has_signal(&back, "came-online"));
    assert_eq!(score(&back, "flaps_24h"), 2.0);
    // Online minutes 0..=4 and 10 of 0..=10.
    let uptime = 6.0 * 100.0 / 11.0;
    assert!(close(back.uptime_percent, uptime), "{back:?}");
    assert!(close(back.quality_score, uptime - 2.0 * 5.0), "{back:?}");
    assert_eq!(back.confidence, Confidence::Yellow, "intermittent");

    // Twenty flips cost at most 30 points.
    let mut now = T0 + 10 * MIN;
    for _ in 0..9 {
        now += 6 * MIN;
        server.heartbeat(now); // went offline at the previous deadline, back now
    }
    let flappy = server.heartbeat(now + MIN);
    assert_eq!(score(&flappy, "flaps_24h"), 20.0);
    let expected = flappy.uptime_percent - 30.0;
    assert!(close(flappy.quality_score, expected), "{flappy:?}");
}

#[test]
fn intermittent_servers_are_yellow_for_the_intermittent_window() {
    let mut server = Server::established();
    server.heartbeat(T0);
    let back = server.heartbeat(T0 + 10 * MIN); // silent past the deadline: two flips
    assert!(has_signal(&back, "went-offline"));
    assert!(has_signal(&back, "came-online"));
    assert_eq!(back.confidence, Confidence::Yellow);
    let mut now = T0 + 10 * MIN;
    while now < T0 + 10 * MIN + HOUR - MIN {
        now += MIN;
        assert_eq!(server.heartbeat(now).confidence, Confidence::Yellow);
    }
    // The flip is an hour old at T0 + 70 min: the intermittent window asks for a tick then.
    let last = server.heartbeat(T0 + 69 * MIN + 30 * SEC);
    assert_eq!(last.next_check_at_ms, Some(T0 + 70 * MIN));
    assert_eq!(server.tick(T0 + 70 * MIN).confidence, Confidence::Green);
}

#[test]
fn a_new_server_is_yellow_until_it_settles() {
    let mut server = Server::registered_at(T0);
    let first = server.heartbeat(T0);
    assert_eq!(first.confidence, Confidence::Yellow);
    let mut now = T0;
    while now < T0 + 9 * MIN {
        now += MIN;
        assert_eq!(server.heartbeat(now).confidence, Confidence::Yellow);
    }
    let almost = server.heartbeat(T0 + 9 * MIN + 30 * SEC);
    assert_eq!(almost.next_check_at_ms, Some(T0 + 10 * MIN), "settle end");
    assert_eq!(server.tick(T0 + 10 * MIN).confidence, Confidence::Green);
}

#[test]
fn spoof_attempts_cap_confidence_at_yellow_never_red() {
    let mut server = Server::established();
    assert_eq!(server.heartbeat(T0).confidence, Confidence::Green);
    let ignored = server.reject(T0 + SEC, "rate_limited");
    assert_eq!(ignored.confidence, Confidence::Green);
    assert!(ignored.signals.is_empty());
    let one = server.reject(T0 + 2 * SEC, "bad_signature");
    assert!(has_signal(&one, "spoof-attempt"));
    assert!(!has_signal(&one, "spoof-burst"));
    assert_eq!(one.confidence, Confidence::Green);
    server.reject(T0 + 3 * SEC, "replay");
    let three = server.reject(T0 + 4 * SEC, "key_version_mismatch");
    assert_eq!(three.confidence, Confidence::Yellow, "capped, not red");
    assert!(
        has_signal(&three, "spoof-burst"),
        "the burst is raised once"
    );
    assert!(three.badges.iter().any(|b| b == "under-attack"));
    assert_eq!(score(&three, "spoof_attempts"), 3.0);
    let four = server.reject(T0 + 5 * SEC, "bad_signature");
    assert_eq!(four.confidence, Confidence::Yellow);
    assert!(
        !has_signal(&four, "spoof-burst"),
        "not again while the burst lasts"
    );
    let beat = server.heartbeat(T0 + MIN);
    assert_eq!(beat.confidence, Confidence::Yellow);
    assert_eq!(beat.status, Status::Online);
    // However many arrive, never red.
    for i in 0..100 {
        let r = server.reject(T0 + MIN + (i + 1) * SEC, "bad_signature");
        assert_eq!(r.confidence, Confidence::Yellow);
    }
    // Staleness still turns it red.
    let silent = server.tick(T0 + 30 * MIN);
    assert_eq!(silent.status, Status::Offline);
    assert_eq!(silent.confidence, Confidence::Red);

    // Never seen, under attack: yellow, with the badge until the first attempt ages out.
    let mut stranger = Server::established();
    stranger.reject(T0, "bad_signature");
    stranger.reject(T0 + SEC, "bad_signature");
    let attacked = stranger.reject(T0 + 2 * SEC, "bad_signature");
    assert_eq!(attacked.status, Status::Unknown);
    assert_eq!(attacked.confidence, Confidence::Yellow);
    assert!(attacked.badges.iter().any(|b| b == "under-attack"));
    assert_eq!(attacked.next_check_at_ms, Some(T0 + HOUR));
    let calm = stranger.tick(T0 + HOUR);
    assert_eq!(calm.confidence, Confidence::Yellow);
    assert!(!calm.badges.iter().any(|b| b == "under-attack"));
    assert_eq!(score(&calm, "spoof_attempts"), 2.0);
}

#[test]
fn unsigned_or_unverified_is_never_green() {
    let mut unsigned = Server::established();
    let hb = unsigned.heartbeat_with(T0, |hb| hb.signed = false);
    assert_eq!(hb.status, Status::Online);
    assert_eq!(hb.confidence, Confidence::Yellow);

    // A 1.3 host hands a token, API-key or network heartbeat over unsigned.
    for auth in [AuthKind::Token, AuthKind::ApiKey, AuthKind::Network] {
        let mut by_token = Server::established();
        let hb = by_token.heartbeat_with(T0, |hb| {
            hb.signed = false;
            hb.auth = auth;
        });
        assert_eq!(hb.status, Status::Online);
        assert_eq!(hb.confidence, Confidence::Yellow, "{auth:?}");
    }

    let mut unverified = Server::established();
    unverified.facts.is_verified = false;
    let hb = unverified.heartbeat(T0);
    assert_eq!(hb.confidence, Confidence::Yellow);
    assert!(hb.badges.is_empty());
}

#[test]
fn restarts_are_signalled_and_impossible_uptime_is_inconsistent() {
    let mut server = Server::established();
    server.heartbeat_with(T0, |hb| hb.uptime_seconds = Some(1000));
    let steady = server.heartbeat_with(T0 + MIN, |hb| hb.uptime_seconds = Some(1060));
    assert!(steady.signals.is_empty());
    let restarted = server.heartbeat_with(T0 + 2 * MIN, |hb| hb.uptime_seconds = Some(5));
    assert!(has_signal(&restarted, "restart-detected"));
    assert_eq!(restarted.confidence, Confidence::Green);
    // Uptime grew by a day in a minute.
    let ahead = server.heartbeat_with(T0 + 3 * MIN, |hb| hb.uptime_seconds = Some(86_400));
    assert!(has_signal(&ahead, "inconsistent"));
    assert_eq!(ahead.confidence, Confidence::Red);
}

#[test]
fn inconsistent_heartbeats_are_red() {
    let mut server = Server::established();
    let overfull = server.heartbeat_with(T0, |hb| {
        hb.players_current = Some(80);
        hb.players_capacity = Some(70);
    });
    assert_eq!(overfull.confidence, Confidence::Red);
    assert_eq!(score(&overfull, "activity"), 100.0);
    let skewed = server.heartbeat_with(T0 + MIN, |hb| hb.sent_at_ms = T0 + MIN - 301 * SEC);
    assert_eq!(skewed.confidence, Confidence::Red);
    let fine = server.heartbeat(T0 + 2 * MIN);
    assert_eq!(fine.confidence, Confidence::Green);
}

#[test]
fn claimed_statuses() {
    let mut server = Server::established();
    server.heartbeat(T0);
    let maintenance = server.heartbeat_with(T0 + MIN, |hb| hb.status = Some("maintenance".into()));
    assert_eq!(maintenance.status, Status::Online);
    assert_eq!(maintenance.confidence, Confidence::Yellow);
    let offline = server.heartbeat_with(T0 + 2 * MIN, |hb| hb.status = Some("offline".into()));
    assert_eq!(offline.status, Status::Offline);
    assert_eq!(offline.confidence, Confidence::Red);
    assert!(has_signal(&offline, "went-offline"));
    assert_eq!(offline.next_check_at_ms, Some(T0 + 2 * MIN + 900 * SEC));
    let back = server.heartbeat(T0 + 3 * MIN);
    assert_eq!(back.status, Status::Online);
    assert!(has_signal(&back, "came-online"));
    assert_eq!(score(&back, "flaps_24h"), 2.0);
}

#[test]
fn hostile_state_and_time_are_errors() {
    let mut server = Server::established();
    server.heartbeat(T0);
    let good = server.state.clone().unwrap();
    assert_eq!(good.first(), Some(&STATE_VERSION));

    for bad in [vec![], vec![0], vec![99], good[..good.len() - 1].to_vec()] {
        server.state = Some(bad);
        assert!(server.try_event(T0 + MIN, Event::Tick).is_err());
    }
    server.state = Some(good);
    assert!(
        server.try_event(T0 - 1, Event::Tick).is_err(),
        "time went back"
    );
    server.params = server
        .params
        .clone()
        .with("grace_seconds", ParamValue::Number(f64::INFINITY));
    assert!(server.try_event(T0 + MIN, Event::Tick).is_err());
}

#[test]
fn extreme_inputs_do_not_panic() {
    for now in [i64::MIN, -1, 0, i64::MAX - 1, i64::MAX] {
        let mut server = Server::registered_at(now);
        server.heartbeat_with(now, |hb| {
            hb.sent_at_ms = i64::MIN;
            hb.interval_seconds = Some(u32::MAX);
            hb.uptime_seconds = Some(u64::MAX);
            hb.players_current = Some(u32::MAX);
            hb.players_capacity = Some(0);
        });
        server.reject(now, "bad_signature");
        server.tick(now);
    }
}

/// One scenario: heartbeats with gaps, restarts, spoofs and ticks over three days.
fn scenario() -> Vec<(i64, Event)> {
    let mut events = Vec::new();
    let mut now = T0;
    let mut uptime = 0u64;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    while now < T0 + 3 * DAY {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let roll = seed % 100;
        let step = if roll < 3 { 40 * MIN } else { MIN };
        now += step;
        uptime = if roll == 50 { 10 } else { uptime + 60 };
        if roll == 7 {
            events.push((
                now,
                Event::Rejected(Rejection {
                    received_at_ms: now,
                    code: "bad_signature".into(),
                }),
            ));
        } else if roll == 8 {
            events.push((now, Event::Tick));
        } else {
            let heartbeat = Heartbeat {
                received_at_ms: now,
                sent_at_ms: now - 2 * SEC,
                signed: roll != 9,
                uptime_seconds: Some(uptime),
                players_current: Some((seed % 50) as u32),
                players_capacity: Some(50),
                mode: (roll == 10).then(|| "idle".to_string()),
                ..Heartbeat::default()
            };
            events.push((now, Event::Heartbeat(heartbeat)));
        }
    }
    events
}

fn fold_all(events: &[(i64, Event)]) -> (Vec<u8>, Assessment) {
    let mut server = Server::registered_at(T0);
    let mut last = None;
    for (now, event) in events {
        last = Some(server.event(*now, event.clone()));
    }
    (server.state.unwrap(), last.unwrap())
}

#[test]
fn the_same_inputs_give_the_same_bytes() {
    let events = scenario();
    assert!(events.len() > 1500);
    assert_eq!(fold_all(&events), fold_all(&events));
}

#[test]
fn ticks_do_not_change_the_state_a_replay_rebuilds() {
    let events = scenario();
    let without_ticks: Vec<_> = events
        .iter()
        .filter(|(_, event)| !matches!(event, Event::Tick))
        .cloned()
        .collect();
    let with_more_ticks: Vec<_> = events
        .iter()
        .flat_map(|(now, event)| [(*now - 1, Event::Tick), (*now, event.clone())])
        .collect();
    let (live, live_assessment) = fold_all(&events);
    // The last event is a heartbeat, so each variant ends at the same moment.
    assert!(matches!(
        without_ticks.last(),
        Some((_, Event::Heartbeat(_)))
    ));
    let (replayed, replayed_assessment) = fold_all(&without_ticks);
    assert_eq!(live, replayed);
    assert_eq!(live_assessment.scores, replayed_assessment.scores);
    let (ticked, _) = fold_all(&with_more_ticks);
    assert_eq!(live, ticked);
}

#[test]
fn replaying_the_history_window_rebuilds_the_state() {
    // A heartbeat older than the window (15 days) comes first, so the window leaves it out.
    let old = Heartbeat {
        received_at_ms: T0 - 20 * DAY,
        sent_at_ms: T0 - 20 * DAY,
        signed: true,
        ..Heartbeat::default()
    };
    let events: Vec<_> = std::iter::once((T0 - 20 * DAY, Event::Heartbeat(old)))
        .chain(scenario())
        .filter(|(_, event)| !matches!(event, Event::Tick))
        .collect();
    let newest = events.last().unwrap().0;
    let window_start = newest - HISTORY_WINDOW_SECONDS as i64 * SEC;
    let window: Vec<_> = events
        .iter()
        .filter(|(now, _)| *now >= window_start)
        .cloned()
        .collect();
    assert!(window.len() < events.len());
    let (live, live_assessment) = fold_all(&events);
    let (rebuilt, rebuilt_assessment) = fold_all(&window);
    assert_eq!(live, rebuilt);
    assert_eq!(live_assessment.status, rebuilt_assessment.status);
    assert_eq!(
        live_assessment.uptime_percent,
        rebuilt_assessment.uptime_percent
    );
    assert_eq!(
        live_assessment.quality_score,
        rebuilt_assessment.quality_score
    );
}

#[test]
fn a_daily_job_stays_online_between_runs_and_goes_offline_two_intervals_later() {
    let mut server = Server::established();
    let daily = |h: &mut Heartbeat| h.interval_seconds = Some(86_400);
    let first = server.heartbeat_with(T0, daily);
    assert_eq!(first.status, Status::Online);
    assert_eq!(first.next_check_at_ms, Some(T0 + 2 * DAY));
    assert_eq!(server.tick(T0 + 20 * HOUR).status, Status::Online);
    assert_eq!(
        server.heartbeat_with(T0 + DAY, daily).status,
        Status::Online
    );
    assert_eq!(server.tick(T0 + DAY + 30 * HOUR).status, Status::Online);
    assert_eq!(server.tick(T0 + 3 * DAY - 1).status, Status::Online);
    assert_eq!(server.tick(T0 + 3 * DAY).status, Status::Offline);
}

// Scheduled servers ------------------------------------------------------------------------

use vigil_policy_sdk::{Cadence, RunPhase, RunReport, Schedule};

use crate::{SIGNAL_JOB_FAILED, SIGNAL_RUN_OVERDUE, SIGNAL_WENT_OFFLINE};

fn cron(expression: &str, time_zone: &str, grace_seconds: u32) -> Schedule {
    Schedule {
        cadence: Cadence::Cron {
            expression: expression.into(),
            time_zone: time_zone.into(),
        },
        grace_seconds,
        max_run_seconds: None,
    }
}

fn period(seconds: u32, grace_seconds: u32) -> Schedule {
    Schedule {
        cadence: Cadence::Period(seconds),
        grace_seconds,
        max_run_seconds: None,
    }
}

impl Server {
    fn scheduled(schedule: Schedule) -> Self {
        let mut server = Self::established();
        server.facts.schedule = Some(schedule);
        server
    }

    fn run(&mut self, now_ms: i64, phase: RunPhase) -> Assessment {
        self.heartbeat_with(now_ms, |h| {
            h.run = Some(RunReport {
                phase,
                exit_code: None,
                duration_ms: None,
                run_id: None,
            });
        })
    }
}

#[test]
fn a_daily_cron_job_on_time_stays_online_and_goes_offline_at_the_deadline_when_late() {
    // 03:00 in Berlin (02:00 UTC in winter), an hour of grace.
    let mut server = Server::scheduled(cron("0 3 * * *", "Europe/Berlin", 3600));
    let run = T0 + 2 * HOUR + 10 * SEC;
    let first = server.heartbeat(run);
    assert_eq!(first.status, Status::Online);
    // Expected again tomorrow 02:00 UTC, late from 03:00 UTC.
    let deadline = T0 + DAY + 3 * HOUR;
    assert_eq!(first.next_check_at_ms, Some(deadline));
    assert_eq!(server.tick(T0 + 20 * HOUR).status, Status::Online);
    // On time the next day (a minute early, within the grace): still online, a day on.
    let second = server.heartbeat(T0 + DAY + 2 * HOUR - MIN);
    assert_eq!(second.status, Status::Online);
    assert_eq!(second.next_check_at_ms, Some(deadline + DAY));
    assert_eq!(second.uptime_percent, 100.0);
    // The third day's run never comes: online until the deadline, offline at it.
    assert_eq!(server.tick(deadline + DAY - 1).status, Status::Online);
    let late = server.tick(deadline + DAY);
    assert_eq!(late.status, Status::Offline);
    assert!(has_signal(&late, SIGNAL_WENT_OFFLINE), "{late:?}");
    // Two slots filled, one missed: uptime counts slots, not minutes.
    assert!(close(late.uptime_percent, 200.0 / 3.0), "{late:?}");
    // It comes back with the next run.
    let back = server.heartbeat(T0 + 3 * DAY + 2 * HOUR);
    assert_eq!(back.status, Status::Online);
    assert!(close(back.uptime_percent, 75.0), "{back:?}");
}

#[test]
fn a_run_long_before_its_slot_fills_nothing() {
    let mut server = Server::scheduled(cron("0 3 * * *", "UTC", 300));
    server.heartbeat(T0 + 3 * HOUR);
    // An extra run in the afternoon: still expected at 03:00 tomorrow, late at 03:05.
    let extra = server.heartbeat(T0 + 15 * HOUR);
    assert_eq!(extra.next_check_at_ms, Some(T0 + DAY + 3 * HOUR + 5 * MIN));
    assert_eq!(
        server.tick(T0 + DAY + 3 * HOUR + 5 * MIN).status,
        Status::Offline
    );
}

#[test]
fn a_weekly_period_with_a_day_of_grace() {
    let week = 7 * DAY;
    let mut server = Server::scheduled(period(7 * 86_400, 86_400));
    let first = server.heartbeat(T0);
    assert_eq!(first.next_check_at_ms, Some(T0 + week + DAY));
    assert_eq!(
        server.tick(T0 + week + 12 * HOUR - 1).status,
        Status::Online
    );
    // Reported half a day late, within the grace: the next week counts from then.
    let second = server.heartbeat(T0 + week + 12 * HOUR);
    assert_eq!(second.status, Status::Online);
    assert_eq!(
        second.next_check_at_ms,
        Some(T0 + 2 * week + 12 * HOUR + DAY)
    );
    assert_eq!(second.uptime_percent, 100.0);
    let late = server.tick(T0 + 2 * week + 12 * HOUR + DAY);
    assert_eq!(late.status, Status::Offline);
    assert!(close(late.uptime_percent, 50.0), "{late:?}");
    // Offline, it is told when the next slot closes (uptime decays by slots).
    assert_eq!(late.next_check_at_ms, Some(T0 + 3 * week + 12 * HOUR + DAY));
}

#[test]
fn a_run_that_never_ends_is_overdue_once_and_a_failed_run_is_signalled() {
    let mut schedule = cron("0 3 * * *", "UTC", 3600);
    schedule.max_run_seconds = Some(1800);
    let mut server = Server::scheduled(schedule);
    let start = server.run(T0 + 3 * HOUR, RunPhase::Start);
    assert_eq!(start.next_check_at_ms, Some(T0 + 3 * HOUR + 30 * MIN));
    let overdue = server.tick(T0 + 3 * HOUR + 30 * MIN);
    assert!(has_signal(&overdue, SIGNAL_RUN_OVERDUE), "{overdue:?}");
    assert_eq!(overdue.status, Status::Online);
    let again = server.tick(T0 + 3 * HOUR + 40 * MIN);
    assert!(!has_signal(&again, SIGNAL_RUN_OVERDUE), "raised once");
    // The next day's run ends in time, with a failure.
    server.run(T0 + DAY + 3 * HOUR, RunPhase::Start);
    let failed = server.run(T0 + DAY + 3 * HOUR + 10 * MIN, RunPhase::Fail);
    assert!(has_signal(&failed, SIGNAL_JOB_FAILED), "{failed:?}");
    assert!(!has_signal(&failed, SIGNAL_RUN_OVERDUE));
    let later = server.tick(T0 + DAY + 3 * HOUR + 40 * MIN);
    assert!(!has_signal(&later, SIGNAL_RUN_OVERDUE), "the run ended");
    // An unscheduled server's failed run is signalled too.
    let mut plain = Server::established();
    assert!(has_signal(
        &plain.run(T0, RunPhase::Fail),
        SIGNAL_JOB_FAILED
    ));
}

#[test]
fn scheduled_folds_do_not_depend_on_ticks_and_clearing_the_schedule_returns_to_grace() {
    let mut schedule = cron("*/30 * * * *", "America/New_York", 120);
    schedule.max_run_seconds = Some(600);
    let mut events = Vec::new();
    let mut now = T0;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..600 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        now += (seed % (50 * MIN as u64)) as i64 + SEC;
        let phase = match seed % 5 {
            0 => Some(RunPhase::Start),
            1 => Some(RunPhase::Success),
            2 => Some(RunPhase::Fail),
            _ => None,
        };
        let heartbeat = Heartbeat {
            received_at_ms: now,
            sent_at_ms: now,
            signed: true,
            run: phase.map(|phase| RunReport {
                phase,
                exit_code: None,
                duration_ms: None,
                run_id: None,
            }),
            ..Heartbeat::default()
        };
        events.push((now, Event::Heartbeat(heartbeat)));
    }
    let fold = |events: &[(i64, Event)]| {
        let mut server = Server::scheduled(schedule.clone());
        let mut last = None;
        for (now, event) in events {
            last = Some(server.event(*now, event.clone()));
        }
        (server.state.unwrap(), last.unwrap())
    };
    let (plain, plain_assessment) = fold(&events);
    // The ticks the host would send, folded in between.
    let mut ticked = Vec::new();
    let mut server = Server::scheduled(schedule.clone());
    let mut next: Option<i64> = None;
    for (now, event) in &events {
        while let Some(at) = next.filter(|at| at < now) {
            next = server.event(at, Event::Tick).next_check_at_ms;
            ticked.push((at, Event::Tick));
        }
        next = server.event(*now, event.clone()).next_check_at_ms;
        ticked.push((*now, event.clone()));
    }
    let (with_ticks, ticked_assessment) = fold(&ticked);
    assert!(ticked.len() > events.len());
    assert_eq!(plain, with_ticks);
    assert_eq!(plain_assessment, ticked_assessment);
    assert_eq!(plain.first(), Some(&crate::STATE_VERSION_SCHEDULED));

    // Cleared: back to the unscheduled format and grace.
    let mut server = Server::scheduled(schedule);
    server.heartbeat(T0);
    server.facts.schedule = None;
    let unscheduled = server.heartbeat(T0 + MIN);
    assert_eq!(unscheduled.next_check_at_ms, Some(T0 + MIN + 5 * MIN));
    assert_eq!(
        server.state.as_ref().and_then(|s| s.first()),
        Some(&STATE_VERSION)
    );
}

/// `resume` as the host calls it after its own downtime.
fn resume(server: &mut Server, down_at_ms: i64, up_at_ms: i64) -> Assessment {
    let evaluation = DefaultPolicy::resume(
        &server.params,
        &server.facts,
        server.state.as_deref(),
        &vigil_policy_sdk::HostGap {
            down_at_ms,
            up_at_ms,
        },
    )
    .expect("resume succeeds");
    assert_finite(&evaluation.assessment);
    server.state = Some(evaluation.state);
    evaluation.assessment
}

#[test]
fn a_deadline_that_fell_while_the_host_was_down_gets_one_fresh_grace_window() {
    let mut server = Server::established();
    // 5 min grace; the host goes down a minute later and is back an hour after that.
    assert_eq!(server.heartbeat(T0).status, Status::Online);
    let (down, up) = (T0 + MIN, T0 + HOUR);
    let resumed = resume(&mut server, down, up);
    assert_eq!(resumed.status, Status::Online, "no flip at the restart");
    assert!(!has_signal(&resumed, "went-offline"));
    assert_eq!(
        resumed.next_check_at_ms,
        Some(up + 5 * MIN),
        "one fresh grace"
    );
    // Still silent after it: offline at the fresh deadline, as usual.
    let late = server.tick(up + 5 * MIN);
    assert_eq!(late.status, Status::Offline);
    assert!(has_signal(&late, "went-offline"));

    // A server that beats within the fresh window stays online with no flip at all.
    let mut beating = Server::established();
    beating.heartbeat(T0);
    resume(&mut beating, down, up);
    let back = beating.heartbeat(up + MIN);
    assert_eq!(back.status, Status::Online);
    assert_eq!(score(&back, "flaps_24h"), 0.0);
}

#[test]
fn a_server_offline_before_the_host_went_down_stays_offline_and_the_gap_is_out_of_uptime() {
    let mut server = Server::established();
    server.heartbeat(T0);
    // Offline at T0 + 5 min (ticked while the host ran), host down from T0 + 10 min to + 40.
    assert_eq!(server.tick(T0 + 5 * MIN).status, Status::Offline);
    let resumed = resume(&mut server, T0 + 10 * MIN, T0 + 40 * MIN);
    assert_eq!(resumed.status, Status::Offline);
    assert!(!has_signal(&resumed, "went-offline"), "no second flip");

    // Uptime: 24 h online, then the host is down for 6 h while the server keeps its grace
    // alive (heartbeats every 4 min before and after). The 6 h are out of both counts.
    let mut steady = Server::established();
    let mut t = T0;
    while t < T0 + DAY {
        steady.heartbeat(t);
        t += 4 * MIN;
    }
    let down = t - 4 * MIN + SEC;
    let up = down + 6 * HOUR;
    resume(&mut steady, down, up);
    let mut last = steady.heartbeat(up + SEC);
    t = up + SEC;
    while t < up + 2 * HOUR {
        t += 4 * MIN;
        last = steady.heartbeat(t);
    }
    assert!(
        close(last.uptime_percent, 100.0),
        "the gap counts as neither online nor offline: {}",
        last.uptime_percent
    );
    // Without the gap's exclusion the same silence would have cost a quarter of the day.
    let mut silent = Server::established();
    let mut t = T0;
    while t < T0 + DAY {
        silent.heartbeat(t);
        t += 4 * MIN;
    }
    silent.heartbeat(up + SEC);
    t = up + SEC;
    let mut last = silent.heartbeat(t + 4 * MIN);
    while t < up + 2 * HOUR {
        t += 4 * MIN;
        last = silent.heartbeat(t);
    }
    assert!(last.uptime_percent < 80.0, "{}", last.uptime_percent);
}
