//! How list commands print: `--output table` (aligned columns, for people) or `--output json`
//! (the API's answer as is, for scripts). Without the flag a terminal gets the table and a
//! pipe gets JSON, so `vigil server list | jq` keeps working.
//!
//! The table is drawn by comfy-table from the same JSON the API answered: each [`Column`] names
//! a member of a row; missing and null cells show `-`, `*_ms` timestamps show as RFC 3339.

use clap::{Args, ValueEnum};
use serde_json::Value;

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns with a header row.
    Table,
    /// The API's JSON answer, pretty-printed.
    Json,
}

/// The `--output` flag of a list command.
#[derive(Debug, Args, Clone, Copy)]
pub struct OutputArg {
    /// `table` or `json`; default: a table on a terminal, JSON otherwise.
    #[arg(long, short = 'o', value_enum)]
    pub output: Option<Format>,
}

impl OutputArg {
    /// The format in force.
    pub fn format(self) -> Format {
        self.output.unwrap_or_else(|| {
            if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
                Format::Table
            } else {
                Format::Json
            }
        })
    }
}

/// One column of a table: its header and the member of each row it shows.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    /// Header text.
    pub header: &'static str,
    /// Member name in each row object.
    pub member: &'static str,
}

/// Shorthand for a [`Column`].
pub const fn col(header: &'static str, member: &'static str) -> Column {
    Column { header, member }
}

/// Prints `answer` in `format`: JSON as is, or a table of the array at `rows` (a JSON pointer,
/// `""` for an answer that is itself the array), one column per [`Column`].
pub fn print(answer: &Value, format: Format, rows: &str, columns: &[Column]) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(answer)?),
        Format::Table => println!("{}", table(answer, rows, columns)),
    }
    Ok(())
}

/// The table text (no trailing newline).
pub fn table(answer: &Value, rows: &str, columns: &[Column]) -> String {
    let mut table = comfy_table::Table::new();
    table
        .load_style(comfy_table::presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Disabled)
        .set_header(columns.iter().map(|c| c.header));
    let empty = Vec::new();
    let items = answer
        .pointer(rows)
        .and_then(Value::as_array)
        .unwrap_or(&empty);
    for item in items {
        table.add_row(columns.iter().map(|c| cell(c.member, item.get(c.member))));
    }
    // comfy-table pads each cell by one blank on both sides; the first column's left blank
    // and the trailing ones help nobody.
    let text = table.to_string();
    let mut lines: Vec<&str> = text
        .lines()
        .map(|l| l.strip_prefix(' ').unwrap_or(l).trim_end())
        .collect();
    if items.is_empty() {
        lines.push("(none)");
    }
    lines.join("\n")
}

/// One cell's text.
fn cell(member: &str, value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => if *b { "yes" } else { "no" }.to_owned(),
        Some(Value::Number(n)) if member.ends_with("_ms") => n
            .as_i64()
            .map_or_else(|| n.to_string(), crate::clock::format_rfc3339_ms),
        Some(Value::Number(n)) if n.is_f64() => {
            format!("{:.1}", n.as_f64().unwrap_or_default())
        }
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| cell("", Some(v)))
            .collect::<Vec<_>>()
            .join(","),
        Some(other @ Value::Object(_)) => other.to_string(),
    }
}

/// A progress bar on stderr for a long operation of `len` steps (indicatif). It draws only on
/// a terminal, so logs and pipes stay clean; call `finish_and_clear` when done.
pub fn progress(len: u64, what: &'static str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    let style = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:30}] {pos}/{len} ({per_sec}, {eta} left)",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(what);
    bar
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_table_has_a_header_aligned_columns_and_readable_cells() {
        let answer = json!({"servers": [
            {"server_id": "alpha", "uptime_percent": 99.5, "is_verified": true,
             "created_at_ms": 0, "badges": ["new", "fast"]},
            {"server_id": "b", "uptime_percent": 7, "is_verified": false, "created_at_ms": null},
        ]});
        let text = table(
            &answer,
            "/servers",
            &[
                col("ID", "server_id"),
                col("UPTIME", "uptime_percent"),
                col("VERIFIED", "is_verified"),
                col("CREATED", "created_at_ms"),
                col("BADGES", "badges"),
            ],
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].contains("ID") && lines[0].contains("BADGES"),
            "{text}"
        );
        assert!(
            lines[1].contains("alpha") && lines[1].contains("99.5"),
            "{text}"
        );
        assert!(lines[1].contains("1970-01-01T00:00:00"), "{text}");
        assert!(
            lines[1].contains("new,fast") && lines[1].contains("yes"),
            "{text}"
        );
        assert!(lines[2].contains(" 7 ") && lines[2].contains('-'), "{text}");
        // Columns line up: every row's second column starts where the header's does.
        let at = lines[0].find("UPTIME").expect("header");
        assert_eq!(lines[1].find("99.5"), Some(at), "{text}");
        assert!(lines.iter().all(|l| !l.ends_with(' ')), "{text:?}");
        assert!(lines[0].starts_with("ID"), "{text:?}");
    }

    #[test]
    fn an_empty_list_says_so() {
        let text = table(&json!([]), "", &[col("ID", "id")]);
        assert!(text.ends_with("(none)"), "{text}");
    }
}
