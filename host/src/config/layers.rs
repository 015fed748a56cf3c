//! The configuration's layers and diagnostics: the file, then the environment, then the
//! checks; what `vigil config check` and `vigil config show` print.
//!
//! **Environment mapping.** Every key can be set from the environment: `VIGIL_` + the
//! section + `__` + the key, upper case, each level of nesting one more `__`:
//!
//! | variable | key |
//! | --- | --- |
//! | `VIGIL_SERVER__LISTEN=0.0.0.0:8080` | `[server] listen` |
//! | `VIGIL_STORAGE__URL=postgres://…` | `[storage] url` |
//! | `VIGIL_TRUST__REQUIRE_VERIFIED=true` | `[trust] require_verified` |
//! | `VIGIL_POLICY__PARAMS__GRACE_SECONDS=120` | `[policy.params] grace_seconds` |
//! | `VIGIL_SERVER__TRUSTED_PROXIES=["10.0.0.0/8"]` | `[server] trusted_proxies` |
//! | `VIGIL_ALERTS__SINKS=[{name="ops", kind="slack", url="https://…"}]` | `[[alerts.sinks]]` |
//!
//! A value takes the type of the key's default (a string stays a string, `8` for an integer
//! key must be an integer); for keys without a default value (optional keys, lists) it is read
//! as a TOML value when it is one (`true`, `12`, `["a"]`, `{…}`) and as a string otherwise.
//! The environment wins over the file. `VIGIL_ADMIN_TOKEN` (older, and still the preferred
//! way to pass the secret) is the same as `VIGIL_ADMIN__TOKEN`. Only names with `__` are read,
//! so `VIGIL_LOG`, `VIGIL_URL`, `VIGIL_CONFIG` keep their own meanings.

use std::path::Path;

use serde::Deserialize as _;

use super::Config;

/// The prefix of every configuration variable.
pub const ENV_PREFIX: &str = "VIGIL_";

/// One environment override: the variable, the key path (lower case), the raw value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// The variable's name.
    pub var: String,
    /// The key, one element per level (`["server", "listen"]`).
    pub path: Vec<String>,
    /// The raw value.
    pub value: String,
}

/// The overrides among `vars` (name, value), sorted by variable name.
pub fn env_overrides(vars: impl IntoIterator<Item = (String, String)>) -> Vec<Override> {
    let mut out: Vec<Override> = vars
        .into_iter()
        .filter_map(|(var, value)| {
            let rest = var.strip_prefix(ENV_PREFIX)?;
            let path: Vec<String> = if rest == "ADMIN_TOKEN" {
                if value.is_empty() {
                    return None;
                }
                vec!["admin".into(), "token".into()]
            } else {
                if !rest.contains("__") {
                    return None;
                }
                rest.split("__").map(str::to_ascii_lowercase).collect()
            };
            Some(Override { var, path, value })
        })
        .collect();
    // `VIGIL_ADMIN__TOKEN` sorts before `VIGIL_ADMIN_TOKEN`, which therefore wins (as before).
    out.sort_by(|a, b| a.var.cmp(&b.var));
    out
}

fn default_at<'a>(defaults: &'a toml::Value, path: &[String]) -> Option<&'a toml::Value> {
    path.iter()
        .try_fold(defaults, |value, key| value.as_table()?.get(key))
}

/// `raw` as a TOML value of the kind `default` has (see the module doc).
fn coerce(
    o: &Override,
    default: Option<&toml::Value>,
    scalars_as_strings: bool,
) -> anyhow::Result<toml::Value> {
    let raw = o.value.trim();
    let literal = || {
        format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
    };
    let bad = |what: &str| anyhow::anyhow!("{}: {raw:?} is not {what}", o.var);
    Ok(match default {
        Some(toml::Value::String(_)) => toml::Value::String(o.value.clone()),
        Some(toml::Value::Integer(_)) => {
            toml::Value::Integer(raw.parse().map_err(|_| bad("an integer"))?)
        }
        Some(toml::Value::Float(_)) => {
            toml::Value::Float(raw.parse().map_err(|_| bad("a number"))?)
        }
        Some(toml::Value::Boolean(_)) => {
            toml::Value::Boolean(raw.parse().map_err(|_| bad("true or false"))?)
        }
        Some(toml::Value::Table(_)) => literal()
            .filter(toml::Value::is_table)
            .ok_or_else(|| bad("an inline table ({ key = value, … })"))?,
        _ => match literal() {
            Some(v @ (toml::Value::Array(_) | toml::Value::Table(_))) => v,
            Some(v) if !scalars_as_strings => v,
            _ => toml::Value::String(o.value.clone()),
        },
    })
}

/// Sets each override in `table` (the parsed file).
/// A scalar for a key without a default (`12345` for `[admin] token`) is read as a TOML
/// literal, or as a string where `as_string` says so (the retries of [`load`]).
pub fn apply(
    table: &mut toml::Table,
    overrides: &[Override],
    as_string: &[bool],
) -> anyhow::Result<()> {
    let defaults = toml::Value::try_from(Config::default())?;
    for (i, o) in overrides.iter().enumerate() {
        anyhow::ensure!(
            o.path.iter().all(|k| !k.is_empty()),
            "{}: empty key segment (use one `__` between levels)",
            o.var
        );
        let value = coerce(
            o,
            default_at(&defaults, &o.path),
            as_string.get(i).copied().unwrap_or(false),
        )?;
        let (last, parents) = o.path.split_last().expect("at least two segments");
        let mut at = &mut *table;
        for key in parents {
            let entry = at
                .entry(key.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            at = entry
                .as_table_mut()
                .ok_or_else(|| anyhow::anyhow!("{}: `{key}` is not a table", o.var))?;
        }
        at.insert(last.clone(), value);
    }
    Ok(())
}

/// Parses `text`, applies `vars`' overrides, deserialises and validates.
pub fn load(
    text: &str,
    vars: impl IntoIterator<Item = (String, String)>,
) -> anyhow::Result<Config> {
    let overrides = env_overrides(vars);
    let config: Config = if overrides.is_empty() {
        // Straight from the text, so errors keep their line and column.
        toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?
    } else {
        let file: toml::Table = text.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
        let names: Vec<&str> = overrides.iter().map(|o| o.var.as_str()).collect();
        let attempt = |as_string: &[bool]| -> anyhow::Result<Result<Config, toml::de::Error>> {
            let mut table = file.clone();
            apply(&mut table, &overrides, as_string)?;
            Ok(Config::deserialize(toml::Value::Table(table)))
        };
        // A scalar that does not fit as a literal is tried as a string, one variable at a
        // time (so `VIGIL_ADMIN__TOKEN=12345` is a token, `…PARAMS__X=120` stays a number).
        let mut as_string = vec![false; overrides.len()];
        let mut result = attempt(&as_string)?;
        for i in 0..overrides.len() {
            if result.is_ok() {
                break;
            }
            as_string[i] = true;
            match attempt(&as_string)? {
                Ok(config) => result = Ok(config),
                Err(e) if e.message() != result.as_ref().err().map_or("", |f| f.message()) => {
                    result = Err(e);
                }
                Err(_) => as_string[i] = false,
            }
        }
        result.map_err(|e| {
            anyhow::anyhow!(
                "{} (with the environment overrides {})",
                e.message(),
                names.join(", ")
            )
        })?
    };
    config.validate()?;
    Ok(config)
}

/// One problem `vigil config check` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// 1-based line and column, when the problem has a place in the file.
    pub at: Option<(usize, usize)>,
    /// What is wrong.
    pub message: String,
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Where `[section] key` (as named at the start of a validation message) is set in `text`.
fn locate(text: &str, message: &str) -> Option<(usize, usize)> {
    let rest = message.strip_prefix('[')?;
    let double = rest.starts_with('[');
    let rest = rest.trim_start_matches('[');
    let (section, after) = rest.split_once(']')?;
    let key = after
        .trim_start_matches(']')
        .trim_start()
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .next()
        .filter(|k| !k.is_empty());
    let header = if double {
        format!("[[{section}]]")
    } else {
        format!("[{section}]")
    };
    let mut offset = 0;
    let mut in_section = false;
    let mut header_at = None;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            in_section = trimmed.starts_with(&header);
            if in_section && header_at.is_none() {
                header_at = Some(offset + (line.len() - line.trim_start().len()));
            }
        } else if in_section && let Some(key) = key {
            let indent = line.len() - line.trim_start().len();
            let stripped = trimmed.strip_prefix(key);
            if stripped.is_some_and(|r| r.trim_start().starts_with('=')) {
                return Some(line_column(text, offset + indent));
            }
        }
        offset += line.len();
    }
    header_at.map(|at| line_column(text, at))
}

/// Checks the configuration in `text` alone (no environment): the first error, placed.
pub fn check_text(text: &str) -> Vec<Diagnostic> {
    match toml::from_str::<Config>(text) {
        Err(e) => vec![Diagnostic {
            at: e.span().map(|span| line_column(text, span.start)),
            message: e.message().trim().to_owned(),
        }],
        Ok(config) => match config.validate() {
            Ok(()) => Vec::new(),
            Err(e) => {
                let message = format!("{e:#}");
                vec![Diagnostic {
                    at: locate(text, &message),
                    message,
                }]
            }
        },
    }
}

/// `vigil config check FILE`'s lines for `path` (empty when the file is valid).
pub fn check_file(path: &Path) -> Vec<String> {
    let shown = path.display();
    match std::fs::read_to_string(path) {
        Err(e) => vec![format!("{shown}: error: cannot read the file: {e}")],
        Ok(text) => check_text(&text)
            .into_iter()
            .map(|d| match d.at {
                Some((line, column)) => format!("{shown}:{line}:{column}: error: {}", d.message),
                None => format!("{shown}: error: {}", d.message),
            })
            .collect(),
    }
}

/// What stands for a secret in `vigil config show`.
pub const REDACTED: &str = "<redacted>";

/// The effective configuration as TOML, every secret replaced by [`REDACTED`]: `[admin]
/// token`, sinks' `hmac_secret` and `token`, `[compat.pap] collector_key`, and the password
/// of `[storage] url`.
pub fn show(config: &Config) -> anyhow::Result<String> {
    let mut value = toml::Value::try_from(config)?;
    if let Some(admin) = value.get_mut("admin").and_then(toml::Value::as_table_mut)
        && admin.contains_key("token")
    {
        admin.insert("token".into(), REDACTED.into());
    }
    if let Some(storage) = value.get_mut("storage").and_then(toml::Value::as_table_mut)
        && let Some(toml::Value::String(url)) = storage.get_mut("url")
    {
        *url = redact_url_password(url);
    }
    if let Some(pap) = value
        .get_mut("compat")
        .and_then(|c| c.get_mut("pap"))
        .and_then(toml::Value::as_table_mut)
        && pap.contains_key("collector_key")
    {
        pap.insert("collector_key".into(), REDACTED.into());
    }
    if let Some(sinks) = value
        .get_mut("alerts")
        .and_then(|a| a.get_mut("sinks"))
        .and_then(toml::Value::as_array_mut)
    {
        for sink in sinks.iter_mut().filter_map(toml::Value::as_table_mut) {
            for key in ["hmac_secret", "token"] {
                if sink.contains_key(key) {
                    sink.insert(key.into(), REDACTED.into());
                }
            }
        }
    }
    Ok(toml::to_string_pretty(&value)?)
}

/// `scheme://user:password@host…` with the password replaced by [`REDACTED`].
pub fn redact_url_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[scheme_end..]
        .find(['/', '?'])
        .map_or(url.len(), |i| scheme_end + i);
    let authority = &url[scheme_end..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => format!(
            "{}{}:{REDACTED}{}",
            &url[..scheme_end],
            &authority[..colon],
            &url[scheme_end + at..]
        ),
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn nested_keys_come_from_the_environment_and_win_over_the_file() {
        let config = load(
            "[server]\nlisten = \"127.0.0.1:1\"\n[policy.params]\ngrace_seconds = 300\n",
            vars(&[
                ("VIGIL_SERVER__LISTEN", "0.0.0.0:9090"),
                ("VIGIL_STORAGE__URL", "sqlite://elsewhere.db"),
                ("VIGIL_STORAGE__MAX_CONNECTIONS", "3"),
                ("VIGIL_TRUST__REQUIRE_VERIFIED", "true"),
                ("VIGIL_POLICY__MAX_FAILURE_SHARE", "0.25"),
                ("VIGIL_POLICY__PARAMS__GRACE_SECONDS", "120"),
                ("VIGIL_SERVER__TRUSTED_PROXIES", "[\"10.0.0.0/8\"]"),
                ("VIGIL_ADMIN__TOKEN", "12345678901234567890123456789012"),
                (
                    "VIGIL_ALERTS__SINKS",
                    "[{name = \"ops\", kind = \"slack\", url = \"https://h/x\"}]",
                ),
                ("VIGIL_LOG", "debug"),
                ("OTHER__THING", "x"),
            ]),
        )
        .expect("valid");
        assert_eq!(config.server.listen.to_string(), "0.0.0.0:9090");
        assert_eq!(config.storage.url, "sqlite://elsewhere.db");
        assert_eq!(config.storage.max_connections, 3);
        assert!(config.trust.require_verified);
        assert!((config.policy.max_failure_share - 0.25).abs() < f64::EPSILON);
        assert_eq!(
            config.policy.params["grace_seconds"],
            toml::Value::Integer(120)
        );
        assert_eq!(config.server.trusted_proxies.len(), 1);
        assert_eq!(
            config.admin.token.as_deref(),
            Some("12345678901234567890123456789012")
        );
        assert_eq!(config.alerts.sinks[0].name, "ops");
    }

    #[test]
    fn a_bad_override_names_its_variable() {
        let e = load("", vars(&[("VIGIL_INGEST__MAX_BATCH", "many")])).unwrap_err();
        assert!(
            format!("{e:#}").contains("VIGIL_INGEST__MAX_BATCH"),
            "{e:#}"
        );
        let e = load("", vars(&[("VIGIL_TRUST__NOPE", "1")])).unwrap_err();
        assert!(format!("{e:#}").contains("nope"), "{e:#}");
        let e = load("", vars(&[("VIGIL_TRUST__REQUIRE_VERIFIED", "yes")])).unwrap_err();
        assert!(format!("{e:#}").contains("true or false"), "{e:#}");
    }

    #[test]
    fn check_places_errors() {
        let d = check_text("[ingest]\nmax_batch = 0\n");
        assert_eq!(d[0].at, Some((2, 1)), "{d:?}");
        let d = check_text("[trust]\n\nrequire_verifed = true\n");
        assert_eq!(d[0].at, Some((3, 1)), "{d:?}");
        assert!(check_text("").is_empty());
    }

    fn keys(prefix: &str, value: &toml::Value, out: &mut Vec<String>) {
        if let toml::Value::Table(table) = value {
            for (k, v) in table {
                let key = format!("{prefix}{k}");
                out.push(key.clone());
                keys(&format!("{key}."), v, out);
            }
        }
    }

    #[test]
    fn the_example_file_lists_every_key_with_its_default() {
        let text = include_str!("../../../vigil.example.toml");
        let loaded = load(text, Vec::new()).expect("the example is valid");
        let defaults = toml::Value::try_from(Config::default()).expect("serialises");
        assert_eq!(
            toml::Value::try_from(&loaded).expect("serialises"),
            defaults,
            "vigil.example.toml differs from the defaults"
        );
        let (mut in_file, mut in_defaults) = (Vec::new(), Vec::new());
        keys(
            "",
            &toml::Value::Table(text.parse().expect("TOML")),
            &mut in_file,
        );
        keys("", &defaults, &mut in_defaults);
        in_file.sort();
        in_defaults.sort();
        assert_eq!(in_file, in_defaults, "every default key is written out");
    }

    #[test]
    fn show_redacts_secrets() {
        let mut config = Config::default();
        config.admin.token = Some("s3cret-s3cret-s3cret-s3cret-s3cret".into());
        config.storage.url = "postgres://vigil:hunter2@db:5432/vigil".into();
        let text = show(&config).expect("shows");
        assert!(
            !text.contains("s3cret") && !text.contains("hunter2"),
            "{text}"
        );
        assert!(
            text.contains("postgres://vigil:<redacted>@db:5432/vigil"),
            "{text}"
        );
        assert_eq!(
            redact_url_password("sqlite://vigil.db"),
            "sqlite://vigil.db"
        );
    }
}
