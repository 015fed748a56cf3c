//! Decoding a heartbeat body (wire contract v1) into a [`DecodedHeartbeat`].
//!
//! Owns the shape rules: size, JSON, I-JSON numbers, known top-level members, field types and
//! lengths. It never looks at keys, servers or clocks (that is [`super`]'s job).

use crate::clock::parse_rfc3339_ms;
use serde_json::{Map, Value};

/// Largest accepted body, in bytes (64 KiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Largest integer magnitude a body may carry: JCS compares numbers as IEEE doubles, so two
/// bodies differing beyond 2^53 would share one signature (RFC 7493, I-JSON).
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

/// Deepest nesting accepted inside `metrics`, `os_info` and `payload`.
pub const MAX_DEPTH: usize = 16;

/// Longest string (value or member name, in characters) accepted inside `metrics`, `os_info`
/// and `payload`.
pub const MAX_NESTED_STRING_CHARS: usize = 4096;

/// Top-level members a heartbeat may carry.
pub(crate) const KNOWN_FIELDS: &[&str] = &[
    "server_id",
    "key_version",
    "timestamp",
    "signature",
    "public_key",
    "status",
    "map_name",
    "players_current",
    "players_capacity",
    "agent_version",
    "mode",
    "interval_seconds",
    "uptime_seconds",
    "metrics",
    "os_info",
    "payload",
    "run",
];

/// Members a `run` object may carry.
pub(crate) const RUN_FIELDS: &[&str] = &["phase", "exit_code", "duration_ms", "run_id"];

/// Longest `run.run_id`, in characters.
pub const MAX_RUN_ID_CHARS: usize = 64;

/// Why a body was refused; `code` is the stable problem code (all answered 422).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct DecodeError {
    /// Stable machine-readable code: `malformed_json`, `duplicate_member`, `unknown_field`,
    /// `missing_field`, `invalid_field` or `number_out_of_range`.
    pub code: &'static str,
    /// Human-readable explanation naming the member at fault.
    pub detail: String,
    /// The `server_id` the body claimed, when it could be read (for the rejection log).
    pub claimed_server: Option<String>,
}

impl DecodeError {
    fn new(code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            claimed_server: None,
        }
    }
}

/// A numeric metric an agent reported.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricValue {
    /// The metric's name.
    pub name: String,
    /// Its value (finite).
    pub value: f64,
}

/// Where a job run is (the `run` member): `start` when it begins, `success` or `fail` when it
/// ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunPhase {
    /// The job started.
    Start,
    /// The job ended with success (exit code 0).
    Success,
    /// The job ended with a failure.
    Fail,
}

impl RunPhase {
    /// The wire name (`start`, `success`, `fail`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Success => "success",
            Self::Fail => "fail",
        }
    }
}

/// A job run's report (the optional `run` member of a heartbeat, signed like every member).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    /// Where the run is.
    pub phase: RunPhase,
    /// The job's exit status (ends only).
    pub exit_code: Option<i32>,
    /// How long the job ran, ms (ends only).
    pub duration_ms: Option<u64>,
    /// The agent's identifier of the run, tying its start to its end.
    pub run_id: Option<String>,
}

/// A heartbeat body that passed every shape rule.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedHeartbeat {
    /// The body exactly as received (the signed object, including `signature`).
    pub body: Map<String, Value>,
    /// The claimed server.
    pub server_id: String,
    /// The claimed key version.
    pub key_version: u32,
    /// The agent's timestamp, milliseconds since the Unix epoch.
    pub sent_at_ms: i64,
    /// The base64 signature as sent; `None` when the body has no `signature` member (accepted
    /// only while `[trust] require_signature` is off).
    pub signature: Option<String>,
    /// A public key offered for open registration.
    pub public_key: Option<String>,
    /// Agent-claimed status.
    pub status: Option<String>,
    /// Map or world name.
    pub map_name: Option<String>,
    /// Current players.
    pub players_current: Option<u32>,
    /// Player capacity.
    pub players_capacity: Option<u32>,
    /// Agent software version.
    pub agent_version: Option<String>,
    /// Agent mode (`emergency`, `idle`, `sleep`, ...).
    pub mode: Option<String>,
    /// Declared interval between heartbeats, seconds.
    pub interval_seconds: Option<u32>,
    /// Uptime of the agent's host or process, seconds.
    pub uptime_seconds: Option<u64>,
    /// Numeric members of `metrics`, sorted by name.
    pub metrics: Vec<MetricValue>,
    /// A job run's report, if the heartbeat carries one.
    pub run: Option<RunReport>,
}

/// Decodes and checks a body. The caller already enforced [`MAX_BODY_BYTES`].
pub fn decode(bytes: &[u8]) -> Result<DecodedHeartbeat, DecodeError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| DecodeError::new("malformed_json", format!("body is not valid JSON: {e}")))?;
    let Value::Object(body) = value else {
        return Err(DecodeError::new(
            "malformed_json",
            "body must be a JSON object",
        ));
    };
    let claimed = body
        .get("server_id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    unique_members(bytes)
        .and_then(|()| decode_object(body))
        .map_err(|mut e| {
            e.claimed_server = claimed;
            e
        })
}

/// Refuses a body in which any object, at any depth, names a member twice (422
/// `duplicate_member`). A JSON parser keeps one of the two (serde keeps the last), so the
/// signature would cover one reading while the stored bytes carry both, and the hidden copy
/// would escape every depth, I-JSON and length check. Run on bytes that parse as JSON.
pub fn unique_members(bytes: &[u8]) -> Result<(), DecodeError> {
    let mut reader = serde_json::Deserializer::from_slice(bytes);
    serde::Deserialize::deserialize(&mut reader)
        .map(|Unique| ())
        .map_err(|e| {
            let detail = e.to_string();
            let detail = detail
                .split(" at line ")
                .next()
                .unwrap_or(&detail)
                .to_owned();
            DecodeError::new("duplicate_member", detail)
        })
}

/// A JSON value read only to see that no object repeats a member name.
struct Unique;

impl<'de> serde::Deserialize<'de> for Unique {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueVisitor)
    }
}

struct UniqueVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueVisitor {
    type Value = Unique;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Unique, E> {
        Ok(Unique)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Unique, E> {
        Ok(Unique)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Unique, E> {
        Ok(Unique)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Unique, E> {
        Ok(Unique)
    }

    fn visit_str<E>(self, _: &str) -> Result<Unique, E> {
        Ok(Unique)
    }

    fn visit_unit<E>(self) -> Result<Unique, E> {
        Ok(Unique)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Unique, A::Error> {
        while seq.next_element::<Unique>()?.is_some() {}
        Ok(Unique)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Unique, A::Error> {
        // Names compare as decoded text: `"a"` and `"\u0061"` are the same member. A set, so
        // an object of thousands of members costs linear time.
        let mut seen = std::collections::HashSet::new();
        while let Some(name) = map.next_key::<String>()? {
            if seen.contains(&name) {
                let shown: String = name.chars().take(64).collect();
                return Err(serde::de::Error::custom(format!(
                    "member `{}` appears twice in one object",
                    shown.escape_debug()
                )));
            }
            seen.insert(name);
            map.next_value::<Unique>()?;
        }
        Ok(Unique)
    }
}

/// Decodes an already-parsed body object (used by replay, which stores the body as received).
pub fn decode_object(body: Map<String, Value>) -> Result<DecodedHeartbeat, DecodeError> {
    if let Some(unknown) = body.keys().find(|k| !KNOWN_FIELDS.contains(&k.as_str())) {
        return Err(DecodeError::new(
            "unknown_field",
            format!("unknown member `{unknown}`"),
        ));
    }
    body.iter()
        .try_for_each(|(k, v)| check_numbers(v, &Path::Member(k), 1))?;

    let server_id = required_str(&body, "server_id")?;
    if !valid_server_id(server_id) {
        return Err(invalid(
            "server_id",
            "must match ^[a-z0-9][a-z0-9._-]{0,127}$ or be a lowercase UUID",
        ));
    }
    let key_version = match body.get("key_version") {
        None | Some(Value::Null) => return Err(missing("key_version")),
        Some(v) => v
            .as_u64()
            .filter(|&n| (1..=u64::from(u32::MAX)).contains(&n))
            .ok_or_else(|| invalid("key_version", "must be an integer from 1 to 4294967295"))?
            as u32,
    };
    let timestamp = required_str(&body, "timestamp")?;
    let sent_at_ms = parse_rfc3339_ms(timestamp)
        .ok_or_else(|| invalid("timestamp", "must be an RFC 3339 date-time"))?;
    let signature = optional_str(&body, "signature", 128)?;

    let decoded = DecodedHeartbeat {
        server_id: server_id.to_owned(),
        key_version,
        sent_at_ms,
        signature,
        public_key: optional_str(&body, "public_key", 64)?,
        status: optional_str(&body, "status", 32)?,
        map_name: optional_str(&body, "map_name", 256)?,
        players_current: optional_u32(&body, "players_current")?,
        players_capacity: optional_u32(&body, "players_capacity")?,
        agent_version: optional_str(&body, "agent_version", 64)?,
        mode: optional_str(&body, "mode", 32)?,
        interval_seconds: optional_u32(&body, "interval_seconds")?
            .map(|n| {
                if (1..=7 * 24 * 3600).contains(&n) {
                    Ok(n)
                } else {
                    Err(invalid("interval_seconds", "must be from 1 to 604800"))
                }
            })
            .transpose()?,
        uptime_seconds: match body.get("uptime_seconds") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .ok_or_else(|| invalid("uptime_seconds", "must be a non-negative integer"))?,
            ),
        },
        metrics: metrics(&body)?,
        run: match body.get("run") {
            None | Some(Value::Null) => None,
            Some(value) => Some(run_report(value)?),
        },
        body: Map::new(),
    };
    for member in ["os_info", "payload"] {
        match body.get(member) {
            None | Some(Value::Null) | Some(Value::Object(_)) => {}
            Some(_) => return Err(invalid(member, "must be an object")),
        }
    }
    Ok(DecodedHeartbeat { body, ..decoded })
}

/// Decodes a stored body (one [`decode`] accepted when it arrived) for replay, without the
/// `body` map, which the fold does not read.
///
/// Replay reads every stored body again, so this is on its hot path: a typed reader borrows
/// the strings and parses only `metrics`, `os_info` and `payload` into JSON values (for the
/// nested checks and the metrics). It applies every rule [`decode`] does; anything it does not
/// accept at once (an unknown or duplicate member, a type mismatch, a value out of range) is
/// decoded again by [`decode`], so the result and any error are exactly [`decode`]'s.
pub fn decode_stored(text: &str) -> Result<DecodedHeartbeat, DecodeError> {
    if let Some(decoded) = stored::read(text) {
        return Ok(decoded);
    }
    decode(text.as_bytes()).map(|decoded| DecodedHeartbeat {
        body: Map::new(),
        ..decoded
    })
}

/// The typed reader behind [`decode_stored`].
mod stored {
    use std::borrow::Cow;

    use serde::Deserialize;
    use serde_json::Value;

    use super::{
        DecodedHeartbeat, MAX_SAFE_INTEGER, Map, Path, check_numbers, metrics, parse_rfc3339_ms,
        run_report, valid_server_id,
    };

    /// Every member a heartbeat may carry (`KNOWN_FIELDS`); a JSON `null` reads as absent, as
    /// in [`super::decode_object`].
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body<'a> {
        #[serde(borrow)]
        server_id: Option<Cow<'a, str>>,
        key_version: Option<u64>,
        #[serde(borrow)]
        timestamp: Option<Cow<'a, str>>,
        #[serde(borrow)]
        signature: Option<Cow<'a, str>>,
        #[serde(borrow)]
        public_key: Option<Cow<'a, str>>,
        #[serde(borrow)]
        status: Option<Cow<'a, str>>,
        #[serde(borrow)]
        map_name: Option<Cow<'a, str>>,
        players_current: Option<u32>,
        players_capacity: Option<u32>,
        #[serde(borrow)]
        agent_version: Option<Cow<'a, str>>,
        #[serde(borrow)]
        mode: Option<Cow<'a, str>>,
        interval_seconds: Option<u32>,
        uptime_seconds: Option<u64>,
        metrics: Option<Value>,
        os_info: Option<Value>,
        payload: Option<Value>,
        run: Option<Value>,
    }

    /// A string member within its length limit (in characters), owned.
    fn limited(value: Option<Cow<'_, str>>, max_chars: usize) -> Option<Option<String>> {
        match value {
            None => Some(None),
            Some(s) if s.chars().count() <= max_chars => Some(Some(s.into_owned())),
            Some(_) => None,
        }
    }

    /// The decoded heartbeat when every rule holds at once; `None` sends the body to the full
    /// decoder (which then answers exactly as at ingest).
    pub(super) fn read(text: &str) -> Option<DecodedHeartbeat> {
        let body: Body<'_> = serde_json::from_str(text).ok()?;
        let server_id = body.server_id.filter(|id| valid_server_id(id))?;
        let key_version = u32::try_from(body.key_version?).ok().filter(|&n| n >= 1)?;
        let sent_at_ms = parse_rfc3339_ms(&body.timestamp?)?;
        if body
            .uptime_seconds
            .is_some_and(|n| n > MAX_SAFE_INTEGER as u64)
        {
            return None;
        }
        if body
            .interval_seconds
            .is_some_and(|n| !(1..=7 * 24 * 3600).contains(&n))
        {
            return None;
        }
        let mut nested = Map::new();
        for (member, value) in [
            ("metrics", body.metrics),
            ("os_info", body.os_info),
            ("payload", body.payload),
        ] {
            match value {
                None | Some(Value::Null) => {}
                Some(value @ Value::Object(_)) => {
                    check_numbers(&value, &Path::Member(member), 1).ok()?;
                    nested.insert(member.to_owned(), value);
                }
                Some(_) => return None,
            }
        }
        Some(DecodedHeartbeat {
            body: Map::new(),
            server_id: server_id.into_owned(),
            key_version,
            sent_at_ms,
            signature: limited(body.signature, 128)?,
            public_key: limited(body.public_key, 64)?,
            status: limited(body.status, 32)?,
            map_name: limited(body.map_name, 256)?,
            players_current: body.players_current,
            players_capacity: body.players_capacity,
            agent_version: limited(body.agent_version, 64)?,
            mode: limited(body.mode, 32)?,
            interval_seconds: body.interval_seconds,
            uptime_seconds: body.uptime_seconds,
            metrics: metrics(&nested).ok()?,
            run: match body.run {
                None | Some(Value::Null) => None,
                Some(value) => Some(run_report(&value).ok()?),
            },
        })
    }
}

/// Whether `id` is a valid server identifier: `^[a-z0-9][a-z0-9._-]{0,127}$` or a UUID in
/// lowercase (one spelling per id: `ABC…` and `abc…` must not register as two servers).
pub fn valid_server_id(id: &str) -> bool {
    let bytes = id.as_bytes();
    let slug = !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes.iter().all(|&b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_' || b == b'-'
        });
    slug || is_uuid(id)
}

fn is_uuid(id: &str) -> bool {
    let bytes = id.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, &b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        })
}

fn missing(member: &str) -> DecodeError {
    DecodeError::new("missing_field", format!("member `{member}` is required"))
}

fn invalid(member: &str, why: &str) -> DecodeError {
    DecodeError::new("invalid_field", format!("member `{member}` {why}"))
}

fn required_str<'a>(body: &'a Map<String, Value>, member: &str) -> Result<&'a str, DecodeError> {
    match body.get(member) {
        None | Some(Value::Null) => Err(missing(member)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(invalid(member, "must be a string")),
    }
}

fn optional_str(
    body: &Map<String, Value>,
    member: &str,
    max_chars: usize,
) -> Result<Option<String>, DecodeError> {
    match body.get(member) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.chars().count() <= max_chars => Ok(Some(s.clone())),
        Some(Value::String(_)) => Err(invalid(
            member,
            &format!("must be at most {max_chars} characters"),
        )),
        Some(_) => Err(invalid(member, "must be a string")),
    }
}

fn optional_u32(body: &Map<String, Value>, member: &str) -> Result<Option<u32>, DecodeError> {
    match body.get(member) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| invalid(member, "must be an integer from 0 to 4294967295")),
    }
}

/// The `run` member: an object of [`RUN_FIELDS`] only, `phase` required, `exit_code` and
/// `duration_ms` only on an end (`success`, `fail`), `success` only with exit code 0.
fn run_report(value: &Value) -> Result<RunReport, DecodeError> {
    let Value::Object(run) = value else {
        return Err(invalid("run", "must be an object"));
    };
    if let Some(unknown) = run.keys().find(|k| !RUN_FIELDS.contains(&k.as_str())) {
        return Err(DecodeError::new(
            "unknown_field",
            format!("unknown member `run.{}`", unknown.escape_debug()),
        ));
    }
    let phase = match run.get("phase") {
        None | Some(Value::Null) => return Err(missing("run.phase")),
        Some(Value::String(s)) if s == "start" => RunPhase::Start,
        Some(Value::String(s)) if s == "success" => RunPhase::Success,
        Some(Value::String(s)) if s == "fail" => RunPhase::Fail,
        Some(_) => return Err(invalid("run.phase", "must be `start`, `success` or `fail`")),
    };
    let exit_code = match run.get("exit_code") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .ok_or_else(|| invalid("run.exit_code", "must be a 32-bit integer"))?,
        ),
    };
    let duration_ms = match run.get("duration_ms") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| invalid("run.duration_ms", "must be a non-negative integer"))?,
        ),
    };
    let run_id = optional_str(run, "run_id", MAX_RUN_ID_CHARS)
        .map_err(|_| invalid("run.run_id", "must be a string of at most 64 characters"))?;
    if phase == RunPhase::Start && (exit_code.is_some() || duration_ms.is_some()) {
        return Err(invalid(
            "run",
            "`exit_code` and `duration_ms` belong to an end (`success` or `fail`), not `start`",
        ));
    }
    if phase == RunPhase::Success && exit_code.is_some_and(|code| code != 0) {
        return Err(invalid(
            "run.exit_code",
            "must be 0 when `phase` is `success`",
        ));
    }
    Ok(RunReport {
        phase,
        exit_code,
        duration_ms,
        run_id,
    })
}

fn metrics(body: &Map<String, Value>) -> Result<Vec<MetricValue>, DecodeError> {
    match body.get("metrics") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(map)) => {
            // serde_json's default map is a BTreeMap, so this is already sorted by name.
            Ok(map
                .iter()
                .filter_map(|(name, v)| {
                    v.as_f64().map(|value| MetricValue {
                        name: name.clone(),
                        value,
                    })
                })
                .collect())
        }
        Some(_) => Err(invalid("metrics", "must be an object")),
    }
}

/// Where a nested value sits (`metrics.cpu`, `payload.list[2]`). Only an error message renders
/// it, so checking a valid body allocates nothing for it.
#[derive(Clone, Copy)]
enum Path<'a> {
    /// A member of the body.
    Member(&'a str),
    /// A member of an object.
    Key(&'a Path<'a>, &'a str),
    /// An element of an array.
    Index(&'a Path<'a>, usize),
}

impl std::fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Path::Member(name) => f.write_str(name),
            Path::Key(parent, key) => {
                let parent = parent.to_string();
                if parent.is_empty() {
                    f.write_str(key)
                } else {
                    write!(f, "{parent}.{key}")
                }
            }
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

/// Refuses integers beyond ±(2^53−1) anywhere, nesting deeper than [`MAX_DEPTH`] and strings
/// longer than [`MAX_NESTED_STRING_CHARS`].
fn check_numbers(value: &Value, path: &Path<'_>, depth: usize) -> Result<(), DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::new(
            "invalid_field",
            format!("`{path}` nests deeper than {MAX_DEPTH} levels"),
        ));
    }
    let too_long =
        |s: &str| s.len() > MAX_NESTED_STRING_CHARS && s.chars().count() > MAX_NESTED_STRING_CHARS;
    match value {
        Value::String(s) if too_long(s) => Err(DecodeError::new(
            "invalid_field",
            format!("`{path}` is longer than {MAX_NESTED_STRING_CHARS} characters"),
        )),
        Value::Object(map) if map.keys().any(|k| too_long(k)) => Err(DecodeError::new(
            "invalid_field",
            format!("`{path}` has a member name longer than {MAX_NESTED_STRING_CHARS} characters"),
        )),
        Value::Number(n) => {
            let too_big = if let Some(i) = n.as_i64() {
                i.unsigned_abs() > MAX_SAFE_INTEGER as u64
            } else if n.is_u64() {
                true
            } else {
                let f = n.as_f64().unwrap_or(f64::INFINITY);
                f.abs() > MAX_SAFE_INTEGER && f.fract() == 0.0
            };
            if too_big {
                return Err(DecodeError::new(
                    "number_out_of_range",
                    format!("`{path}`: integers must be within ±(2^53−1) (I-JSON, RFC 7493)"),
                ));
            }
            Ok(())
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| check_numbers(v, &Path::Index(path, i), depth + 1)),
        Value::Object(map) => map
            .iter()
            .try_for_each(|(k, v)| check_numbers(v, &Path::Key(path, k), depth + 1)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(extra: &str) -> Vec<u8> {
        format!(
            r#"{{"server_id":"eu-1","key_version":1,"timestamp":"2026-01-22T21:05:00Z","signature":"x"{extra}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn the_run_member_is_checked_member_by_member() {
        let run = |json: &str| decode(&body(&format!(r#","run":{json}"#)));
        let ended = run(r#"{"phase":"fail","exit_code":1,"duration_ms":1200,"run_id":"r-7"}"#)
            .expect("a failed run");
        assert_eq!(
            ended.run,
            Some(RunReport {
                phase: RunPhase::Fail,
                exit_code: Some(1),
                duration_ms: Some(1200),
                run_id: Some("r-7".into()),
            })
        );
        assert_eq!(
            run(r#"{"phase":"start"}"#)
                .expect("start")
                .run
                .map(|r| r.phase),
            Some(RunPhase::Start)
        );
        assert_eq!(run("null").expect("null is absent").run, None);
        let code = |json: &str| run(json).map(|_| ()).map_err(|e| e.code);
        assert_eq!(code(r#"{"phase":"fail","why":"x"}"#), Err("unknown_field"));
        assert_eq!(code(r#"{"exit_code":1}"#), Err("missing_field"));
        assert_eq!(code(r#"{"phase":"finished"}"#), Err("invalid_field"));
        assert_eq!(
            code(r#"{"phase":"start","exit_code":0}"#),
            Err("invalid_field")
        );
        assert_eq!(
            code(r#"{"phase":"success","exit_code":2}"#),
            Err("invalid_field")
        );
        assert_eq!(
            code(r#"{"phase":"fail","exit_code":2147483648}"#),
            Err("invalid_field")
        );
        assert_eq!(
            code(r#"{"phase":"fail","duration_ms":9007199254740993}"#),
            Err("number_out_of_range")
        );
        let long_id = format!(r#"{{"phase":"fail","run_id":"{}"}}"#, "x".repeat(65));
        assert_eq!(code(&long_id), Err("invalid_field"));
        assert_eq!(
            code(r#"{"phase":"fail","phase":"success"}"#),
            Err("duplicate_member")
        );
        assert_eq!(code("[1]"), Err("invalid_field"));
    }

    #[test]
    fn minimal_body_decodes() {
        let d = decode(&body("")).expect("valid");
        assert_eq!(d.server_id, "eu-1");
        assert_eq!(d.sent_at_ms, 1_769_115_900_000);
    }

    #[test]
    fn rules_give_stable_codes() {
        let code = |b: &[u8]| decode(b).unwrap_err().code;
        assert_eq!(code(b"{"), "malformed_json");
        assert_eq!(code(b"[1]"), "malformed_json");
        assert_eq!(code(&body(r#","extra":1"#)), "unknown_field");
        assert_eq!(
            code(&body(r#","players_current":9007199254740993"#)),
            "number_out_of_range"
        );
        assert_eq!(
            code(&body(r#","payload":{"n":-9007199254740993}"#)),
            "number_out_of_range"
        );
        assert_eq!(
            code(&body(r#","payload":{"n":1e300}"#)),
            "number_out_of_range"
        );
        assert_eq!(code(&body(r#","players_current":-1"#)), "invalid_field");
        assert_eq!(code(&body(r#","metrics":[1]"#)), "invalid_field");
        assert_eq!(
            code(br#"{"server_id":"a","timestamp":"2026-01-22T21:05:00Z","signature":"x"}"#),
            "missing_field"
        );
        assert_eq!(
            code(br#"{"server_id":"a","key_version":1,"timestamp":"2026-01-22T21:05:00Z","signature":1}"#),
            "invalid_field"
        );
        let long = "a".repeat(MAX_NESTED_STRING_CHARS + 1);
        assert_eq!(
            code(&body(&format!(r#","payload":{{"s":"{long}"}}"#))),
            "invalid_field"
        );
        assert_eq!(
            code(&body(&format!(r#","os_info":{{"{long}":1}}"#))),
            "invalid_field"
        );
        assert_eq!(
            code(br#"{"server_id":"A!","key_version":1,"timestamp":"2026-01-22T21:05:00Z","signature":"x"}"#),
            "invalid_field"
        );
        assert_eq!(
            code(br#"{"server_id":"a","key_version":1,"timestamp":"yesterday","signature":"x"}"#),
            "invalid_field"
        );
    }

    #[test]
    fn errors_name_where_in_the_body_the_bad_value_sits() {
        let detail = |extra: &str| decode(&body(extra)).unwrap_err().detail;
        assert_eq!(
            detail(r#","payload":{"a":[1,{"b":9007199254740993}]}"#),
            "`payload.a[1].b`: integers must be within ±(2^53−1) (I-JSON, RFC 7493)"
        );
        assert_eq!(
            detail(r#","payload":{"":{"x":[[0.5, 9007199254740992]]}}"#),
            "`payload..x[0][1]`: integers must be within ±(2^53−1) (I-JSON, RFC 7493)"
        );
        let long = "é".repeat(MAX_NESTED_STRING_CHARS + 1);
        assert_eq!(
            detail(&format!(r#","os_info":{{"list":["{long}"]}}"#)),
            format!("`os_info.list[0]` is longer than {MAX_NESTED_STRING_CHARS} characters")
        );
    }

    #[test]
    fn signature_is_optional_at_decode() {
        let d =
            decode(br#"{"server_id":"eu-1","key_version":1,"timestamp":"2026-01-22T21:05:00Z"}"#)
                .expect("valid without a signature");
        assert_eq!(d.signature, None);
        assert_eq!(
            decode(&body("")).expect("valid").signature.as_deref(),
            Some("x")
        );
    }

    #[test]
    fn largest_safe_integer_passes_and_deep_nesting_fails() {
        assert!(decode(&body(r#","payload":{"n":9007199254740991, "f": 0.5}"#)).is_ok());
        let deep = format!(r#","payload":{}1{}"#, "[".repeat(20), "]".repeat(20));
        assert_eq!(decode(&body(&deep)).unwrap_err().code, "invalid_field");
    }

    /// Candidate members for [`stored_bodies_decode_exactly_as_at_ingest`]: for each member,
    /// JSON texts of valid, borderline and invalid values.
    fn candidates() -> Vec<(&'static str, Vec<String>)> {
        let s = |v: &str| serde_json::to_string(v).expect("a string");
        let texts = |vs: &[&str]| vs.iter().map(|v| (*v).to_owned()).collect::<Vec<_>>();
        let limited = |max: usize| {
            vec![
                s("online"),
                s(&"é".repeat(max)),
                s(&"é".repeat(max + 1)),
                s("on\"li\\ne\u{1F600}"),
                "3".to_owned(),
                "null".to_owned(),
            ]
        };
        vec![
            (
                "server_id",
                vec![
                    s("eu-1"),
                    s("A!"),
                    s("123e4567-e89b-12d3-a456-426614174000"),
                    s(&"a".repeat(129)),
                    "5".into(),
                    "null".into(),
                ],
            ),
            (
                "key_version",
                texts(&["1", "0", "4294967295", "4294967296", "1.0", "\"1\"", "null"]),
            ),
            (
                "timestamp",
                vec![
                    s("2026-01-22T21:05:00Z"),
                    s("2026-01-22T21:05:00.123+02:00"),
                    s("yesterday"),
                    "7".into(),
                    "null".into(),
                ],
            ),
            ("signature", limited(128)),
            ("public_key", limited(64)),
            ("status", limited(32)),
            ("map_name", limited(256)),
            ("agent_version", limited(64)),
            ("mode", limited(32)),
            (
                "players_current",
                texts(&["0", "4294967295", "4294967296", "-1", "2.5", "5.0", "null"]),
            ),
            ("players_capacity", texts(&["20", "1e2", "null"])),
            (
                "interval_seconds",
                texts(&["0", "1", "604800", "604801", "null", "\"30\""]),
            ),
            (
                "uptime_seconds",
                texts(&[
                    "0",
                    "9007199254740991",
                    "9007199254740992",
                    "18446744073709551616",
                    "-1",
                    "null",
                ]),
            ),
            (
                "metrics",
                texts(&[
                    "{}",
                    r#"{"cpu":1.5,"n":"x","z":{"a":1},"m":-0.0,"e":1e-300}"#,
                    "[1]",
                    "5",
                    "null",
                    r#"{"big":9007199254740993}"#,
                    r#"{"f":1e300,"g":2}"#,
                ]),
            ),
            (
                "os_info",
                texts(&[
                    "{}",
                    r#"{"a":[1,2,{"b":null}]}"#,
                    "\"x\"",
                    "null",
                    r#"{"d":[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]}"#,
                ]),
            ),
            (
                "payload",
                texts(&["{}", r#"{"n":-9007199254740993}"#, "[]", "null"]),
            ),
            (
                "run",
                texts(&[
                    r#"{"phase":"fail","exit_code":1,"duration_ms":12,"run_id":"r1"}"#,
                    r#"{"phase":"start"}"#,
                    r#"{"phase":"start","exit_code":0}"#,
                    r#"{"phase":"success","exit_code":3}"#,
                    r#"{"phase":"done"}"#,
                    r#"{"exit_code":1}"#,
                    r#"{"phase":"fail","extra":1}"#,
                    r#"{"phase":"fail","exit_code":4294967296}"#,
                    r#"{"phase":"fail","duration_ms":-1}"#,
                    "[]",
                    "null",
                ]),
            ),
            ("extra", texts(&["1"])),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(8192))]
        #[test]
        fn stored_bodies_decode_exactly_as_at_ingest(
            picks in proptest::collection::vec((0usize..24, 0usize..4, 0usize..16), 18),
            duplicate in 0usize..40,
        ) {
            let candidates = candidates();
            let mut members = Vec::new();
            for ((name, values), (presence, validity, index)) in candidates.iter().zip(&picks) {
                // Each list starts with a valid value, picked 3 times in 4, so that many
                // bodies are valid or break one rule only. The required members are always
                // there (possibly null or invalid); the others one time in three, `extra`
                // one time in 24.
                let value = if *validity != 0 { &values[0] } else { &values[index % values.len()] };
                let present = match *name {
                    "server_id" | "key_version" | "timestamp" => true,
                    "extra" => *presence == 0,
                    _ => presence % 3 == 0,
                };
                if present {
                    members.push(format!("{}:{value}", serde_json::to_string(name).expect("name")));
                }
            }
            if let Some(again) = members.get(duplicate).cloned() {
                members.push(again);
            }
            let text = format!("{{{}}}", members.join(","));
            let full = decode(text.as_bytes()).map(|d| DecodedHeartbeat { body: Map::new(), ..d });
            proptest::prop_assert_eq!(decode_stored(&text), full, "{}", text);
        }
    }

    #[test]
    fn a_typical_stored_body_takes_the_typed_reader() {
        let text = r#"{"server_id":"eu-1","key_version":1,"timestamp":"2026-01-22T21:05:00Z","signature":"x","status":"online","metrics":{"cpu":1.5}}"#;
        let read = stored::read(text).expect("the typed reader accepts it");
        let full = decode(text.as_bytes()).expect("valid");
        assert_eq!(
            read,
            DecodedHeartbeat {
                body: Map::new(),
                ..full
            }
        );
    }

    #[test]
    fn server_ids() {
        assert!(valid_server_id("eu-island-01"));
        assert!(valid_server_id("0.a_b-c"));
        assert!(valid_server_id("123e4567-e89b-12d3-a456-426614174000"));
        assert!(!valid_server_id(""));
        assert!(!valid_server_id("-a"));
        assert!(!valid_server_id("Upper"));
        assert!(!valid_server_id(&"a".repeat(129)));
    }
}
