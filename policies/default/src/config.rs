//! The default policy's parameters: one table gives their names, defaults, allowed ranges and
//! descriptions, so `describe()`, validation and the README cannot drift apart. A value of the
//! wrong kind, not finite or out of range fails the evaluation (`Err`) rather than being
//! silently clamped: an operator's typo must be loud.

use vigil_policy_sdk::{ParamSpec, ParamValue, Params};

/// The longest grace any heartbeat can earn, in seconds. Bounds the replay window.
pub const MAX_GRACE_SECONDS: f64 = 3600.0;
/// The longest uptime window, in seconds (24 h). Bounds the replay window and the state size.
pub const MAX_UPTIME_WINDOW_SECONDS: f64 = 86_400.0;

/// One numeric parameter: name, default, inclusive range, description.
struct NumberParam {
    name: &'static str,
    default: f64,
    min: f64,
    max: f64,
    description: &'static str,
}

const NUMBERS: &[NumberParam] = &[
    NumberParam {
        name: "grace_seconds",
        default: 300.0,
        min: 1.0,
        max: MAX_GRACE_SECONDS,
        description: "Seconds a server stays online after a heartbeat that declares no interval and no known mode (1-3600).",
    },
    NumberParam {
        name: "interval_grace_multiplier",
        default: 2.0,
        min: 1.0,
        max: 10.0,
        description: "When a heartbeat declares an interval (or a known mode), grace = this multiplier x that interval, capped at 3600 s (1-10).",
    },
    NumberParam {
        name: "emergency_interval_seconds",
        default: 5.0,
        min: 1.0,
        max: MAX_GRACE_SECONDS,
        description: "Interval assumed for a heartbeat in mode `emergency` that declares none (1-3600).",
    },
    NumberParam {
        name: "idle_interval_seconds",
        default: 30.0,
        min: 1.0,
        max: MAX_GRACE_SECONDS,
        description: "Interval assumed for a heartbeat in mode `idle` that declares none (1-3600).",
    },
    NumberParam {
        name: "sleep_interval_seconds",
        default: 900.0,
        min: 1.0,
        max: MAX_GRACE_SECONDS,
        description: "Interval assumed for a heartbeat in mode `sleep` that declares none (1-3600).",
    },
    NumberParam {
        name: "uptime_window_seconds",
        default: MAX_UPTIME_WINDOW_SECONDS,
        min: 3600.0,
        max: MAX_UPTIME_WINDOW_SECONDS,
        description: "The uptime window, tracked per minute (rounded down to whole minutes); flaps are counted over it too (3600-86400).",
    },
    NumberParam {
        name: "weight_uptime",
        default: 0.7,
        min: 0.0,
        max: 100.0,
        description: "Weight of uptime in the quality score; weights are normalised by their sum (0-100).",
    },
    NumberParam {
        name: "weight_activity",
        default: 0.3,
        min: 0.0,
        max: 100.0,
        description: "Weight of activity (players_current / players_capacity x 100) in the quality score; ignored when no players are reported (0-100).",
    },
    NumberParam {
        name: "flap_penalty",
        default: 5.0,
        min: 0.0,
        max: 100.0,
        description: "Quality points lost per online/offline flip within the uptime window (0-100).",
    },
    NumberParam {
        name: "flap_penalty_max",
        default: 30.0,
        min: 0.0,
        max: 100.0,
        description: "The most quality points flapping can cost (0-100).",
    },
    NumberParam {
        name: "spoof_threshold",
        default: 3.0,
        min: 1.0,
        max: 64.0,
        description: "Spoof-like rejections (see spoof_codes) within spoof_window_seconds that cap confidence at yellow (never red: anyone can send one), add the under-attack badge and raise a spoof-burst signal (1-64, whole number).",
    },
    NumberParam {
        name: "spoof_window_seconds",
        default: 3600.0,
        min: 60.0,
        max: MAX_UPTIME_WINDOW_SECONDS,
        description: "How long a spoof-like rejection counts (60-86400).",
    },
    NumberParam {
        name: "settle_seconds",
        default: 600.0,
        min: 0.0,
        max: MAX_UPTIME_WINDOW_SECONDS,
        description: "A server younger than the uptime window stays yellow for this long after its first heartbeat (0-86400).",
    },
    NumberParam {
        name: "intermittent_window_seconds",
        default: 3600.0,
        min: 0.0,
        max: MAX_UPTIME_WINDOW_SECONDS,
        description: "A server that flipped online/offline within this many seconds is intermittent: yellow at best (0-86400).",
    },
    NumberParam {
        name: "max_clock_skew_seconds",
        default: 300.0,
        min: 1.0,
        max: MAX_UPTIME_WINDOW_SECONDS,
        description: "A heartbeat is inconsistent (red) when its sent_at is further than this from its received_at, or its uptime_seconds grew this much faster than the clock (1-86400).",
    },
    NumberParam {
        name: "offline_recheck_seconds",
        default: 900.0,
        min: 60.0,
        max: MAX_UPTIME_WINDOW_SECONDS,
        description: "While offline with online minutes left in the window, ask for a tick this often so uptime decays (60-86400).",
    },
    NumberParam {
        name: "reliable_uptime_percent",
        default: 99.0,
        min: 0.0,
        max: 100.0,
        description: "Uptime over a full window that earns the `reliable` badge (0-100).",
    },
];

/// The default for `spoof_codes`.
pub const DEFAULT_SPOOF_CODES: &str =
    "bad_signature,key_version_mismatch,replay,clock_skew,timestamp_skew";

const SPOOF_CODES_DESCRIPTION: &str = "Comma-separated rejection codes that count as spoof attempts; other rejections (malformed, too large, rate limited, unverified) are ignored.";

/// Every parameter the default policy understands, with its default, for `describe()`.
pub fn param_specs() -> Vec<ParamSpec> {
    let mut specs: Vec<ParamSpec> = NUMBERS
        .iter()
        .map(|p| ParamSpec::number(p.name, p.description, p.default))
        .collect();
    specs.push(ParamSpec::text(
        "spoof_codes",
        SPOOF_CODES_DESCRIPTION,
        DEFAULT_SPOOF_CODES,
    ));
    specs
}

/// The validated parameters, in the units the fold uses (milliseconds, minutes, fractions).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Grace without a known interval, ms.
    pub grace_ms: i64,
    /// Grace = multiplier x interval when an interval is known.
    pub interval_grace_multiplier: f64,
    /// Interval for mode `emergency`, seconds.
    pub emergency_interval_seconds: f64,
    /// Interval for mode `idle`, seconds.
    pub idle_interval_seconds: f64,
    /// Interval for mode `sleep`, seconds.
    pub sleep_interval_seconds: f64,
    /// The uptime window, whole minutes (60 to 1440).
    pub uptime_window_minutes: u16,
    /// Weight of uptime in quality.
    pub weight_uptime: f64,
    /// Weight of activity in quality.
    pub weight_activity: f64,
    /// Quality points per flip.
    pub flap_penalty: f64,
    /// Cap on the flap penalty.
    pub flap_penalty_max: f64,
    /// Spoof-like rejections in the window that cap confidence at yellow.
    pub spoof_threshold: usize,
    /// How long a spoof-like rejection counts, ms.
    pub spoof_window_ms: i64,
    /// Codes that count as spoof attempts.
    pub spoof_codes: Vec<String>,
    /// The "new server" period, ms.
    pub settle_ms: i64,
    /// A flip within this many ms makes the server intermittent.
    pub intermittent_window_ms: i64,
    /// Allowed drift between sent_at and received_at, ms.
    pub max_clock_skew_ms: i64,
    /// Recheck period while offline, ms.
    pub offline_recheck_ms: i64,
    /// Uptime that earns `reliable`.
    pub reliable_uptime_percent: f64,
}

impl Default for Config {
    fn default() -> Self {
        Self::from_params(&Params::default()).expect("the defaults are in range")
    }
}

impl Config {
    /// Validates `params` (absent ones take their defaults).
    pub fn from_params(params: &Params) -> Result<Self, String> {
        let spoof_codes = match params.get("spoof_codes") {
            None => DEFAULT_SPOOF_CODES,
            Some(ParamValue::Text(text)) => text.as_str(),
            Some(_) => return Err("param spoof_codes must be a text".to_string()),
        };
        Ok(Self {
            grace_ms: seconds_to_ms(number(params, "grace_seconds")?),
            interval_grace_multiplier: number(params, "interval_grace_multiplier")?,
            emergency_interval_seconds: number(params, "emergency_interval_seconds")?,
            idle_interval_seconds: number(params, "idle_interval_seconds")?,
            sleep_interval_seconds: number(params, "sleep_interval_seconds")?,
            // In range 3600..=86400, so 60..=1440 minutes: the cast cannot truncate.
            uptime_window_minutes: (number(params, "uptime_window_seconds")? / 60.0).floor() as u16,
            weight_uptime: number(params, "weight_uptime")?,
            weight_activity: number(params, "weight_activity")?,
            flap_penalty: number(params, "flap_penalty")?,
            flap_penalty_max: number(params, "flap_penalty_max")?,
            spoof_threshold: number(params, "spoof_threshold")?.floor() as usize,
            spoof_window_ms: seconds_to_ms(number(params, "spoof_window_seconds")?),
            spoof_codes: spoof_codes
                .split(',')
                .map(str::trim)
                .filter(|code| !code.is_empty())
                .map(str::to_string)
                .collect(),
            settle_ms: seconds_to_ms(number(params, "settle_seconds")?),
            intermittent_window_ms: seconds_to_ms(number(params, "intermittent_window_seconds")?),
            max_clock_skew_ms: seconds_to_ms(number(params, "max_clock_skew_seconds")?),
            offline_recheck_ms: seconds_to_ms(number(params, "offline_recheck_seconds")?),
            reliable_uptime_percent: number(params, "reliable_uptime_percent")?,
        })
    }

    /// Runs `f` with the [`Config`] of `params`, validating `params` only the first time they
    /// are seen.
    ///
    /// The validated config is kept with the parameters themselves ([`Params::derived`]): the
    /// SDK keeps one `Params` per component instance, so validation runs once per instance,
    /// not once per event. The result is the same as `f(&Config::from_params(params)?)`: an
    /// invalid set is an `Err` every time.
    pub fn with_cached<R>(params: &Params, f: impl FnOnce(&Config) -> R) -> Result<R, String> {
        params.derived(Config::from_params, |config| {
            config.as_ref().map(f).map_err(Clone::clone)
        })
    }

    /// The uptime window in ms.
    pub fn uptime_window_ms(&self) -> i64 {
        i64::from(self.uptime_window_minutes) * 60_000
    }

    /// Whether a rejection code counts as a spoof attempt.
    pub fn is_spoof_code(&self, code: &str) -> bool {
        self.spoof_codes.iter().any(|c| c == code)
    }

    /// The heartbeat interval the agent declared, or the one its mode implies, in seconds.
    pub fn interval_seconds(&self, declared: Option<u32>, mode: Option<&str>) -> Option<f64> {
        match declared {
            Some(seconds) if seconds > 0 => Some(f64::from(seconds)),
            _ => match mode {
                Some("emergency") => Some(self.emergency_interval_seconds),
                Some("idle") => Some(self.idle_interval_seconds),
                Some("sleep") => Some(self.sleep_interval_seconds),
                _ => None,
            },
        }
    }

    /// The grace a heartbeat earns, ms: multiplier x interval when one is known, else
    /// `grace_seconds`; always within 1 s..=3600 s.
    pub fn grace_ms(&self, declared: Option<u32>, mode: Option<&str>) -> i64 {
        match self.interval_seconds(declared, mode) {
            Some(interval) => seconds_to_ms(
                (interval * self.interval_grace_multiplier).clamp(1.0, MAX_GRACE_SECONDS),
            ),
            None => self.grace_ms,
        }
    }
}

/// Seconds (finite, validated) to whole milliseconds. `as` saturates; it never panics.
fn seconds_to_ms(seconds: f64) -> i64 {
    (seconds * 1000.0).round() as i64
}

fn number(params: &Params, name: &str) -> Result<f64, String> {
    let Some(spec) = NUMBERS.iter().find(|p| p.name == name) else {
        return Err(format!("internal: no parameter {name}"));
    };
    match params.get(name) {
        None => Ok(spec.default),
        Some(ParamValue::Number(value)) if value.is_finite() => {
            if *value >= spec.min && *value <= spec.max {
                Ok(*value)
            } else {
                Err(format!(
                    "param {name} = {value} is outside {}..={}",
                    spec.min, spec.max
                ))
            }
        }
        Some(ParamValue::Number(value)) => Err(format!("param {name} = {value} is not finite")),
        Some(_) => Err(format!("param {name} must be a number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_match_the_specs() {
        let config = Config::from_params(&Params::defaults(&param_specs())).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.grace_ms, 300_000);
        assert_eq!(config.uptime_window_minutes, 1440);
        assert_eq!(config.spoof_threshold, 3);
        assert!(config.is_spoof_code("bad_signature"));
        assert!(!config.is_spoof_code("rate_limited"));
    }

    #[test]
    fn invalid_params_are_errors() {
        let nan = Params::default().with("grace_seconds", ParamValue::Number(f64::NAN));
        assert!(Config::from_params(&nan).is_err());
        let big = Params::default().with("uptime_window_seconds", ParamValue::Number(1e9));
        assert!(Config::from_params(&big).is_err());
        let text = Params::default().with("flap_penalty", ParamValue::Text("5".into()));
        assert!(Config::from_params(&text).is_err());
        let flag = Params::default().with("spoof_codes", ParamValue::Flag(true));
        assert!(Config::from_params(&flag).is_err());
    }

    #[test]
    fn the_cached_config_follows_the_params() {
        let defaults = Params::defaults(&param_specs());
        let grace = |params: &Params| Config::with_cached(params, |c| c.grace_ms);
        assert_eq!(grace(&defaults), Ok(300_000));
        assert_eq!(grace(&defaults), Ok(300_000), "reused");
        let longer = defaults
            .clone()
            .with("grace_seconds", ParamValue::Number(600.0));
        assert_eq!(
            grace(&longer),
            Ok(600_000),
            "changed params are validated again"
        );
        let nan = defaults
            .clone()
            .with("grace_seconds", ParamValue::Number(f64::NAN));
        assert!(grace(&nan).is_err());
        assert!(grace(&nan).is_err(), "an invalid set stays an error");
        assert_eq!(grace(&defaults), Ok(300_000));
    }

    #[test]
    fn grace_from_interval_mode_or_default() {
        let config = Config::default();
        assert_eq!(config.grace_ms(Some(30), None), 60_000);
        assert_eq!(config.grace_ms(Some(30), Some("sleep")), 60_000);
        assert_eq!(config.grace_ms(None, Some("emergency")), 10_000);
        assert_eq!(config.grace_ms(None, Some("idle")), 60_000);
        assert_eq!(config.grace_ms(None, Some("sleep")), 1_800_000);
        assert_eq!(config.grace_ms(None, Some("party")), 300_000);
        assert_eq!(config.grace_ms(Some(0), None), 300_000);
        // Capped at an hour, however long the declared interval.
        assert_eq!(config.grace_ms(Some(u32::MAX), None), 3_600_000);
    }
}
