//! What people look at without a client: the dashboard (`/`, `/servers/{id}`), SVG badges
//! (and the shields.io endpoint JSON) and the public status page of a cluster. Server-rendered from the stored snapshots and history;
//! no policy is called and nothing is written. Admin-only fields (rejections, key history,
//! ingest tokens, schedule, commands, audit) appear only on a server's dashboard page signed in
//! with an admin key; the status pages and badges never render them.

pub mod badge;
pub mod bars;
pub mod dashboard;
pub mod session;
pub mod status;

/// A time for people: `<time datetime="RFC 3339">YYYY-MM-DD HH:MM:SS UTC</time>` (the date
/// and the time wrap apart on narrow screens, never inside either).
pub fn when(at_ms: i64) -> String {
    let rfc = crate::clock::format_rfc3339_ms(at_ms);
    let shown = match (rfc.get(..10), rfc.get(11..19)) {
        (Some(date), Some(time)) => format!("{date} {time}\u{a0}UTC"),
        _ => rfc.clone(),
    };
    format!("<time datetime=\"{rfc}\">{shown}</time>")
}

/// Escapes text for HTML and XML (element content and double-quoted attributes).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_shown_in_utc_with_the_machine_form_kept() {
        assert_eq!(
            super::when(1_764_606_123_456),
            "<time datetime=\"2025-12-01T16:22:03.456Z\">2025-12-01 16:22:03\u{a0}UTC</time>"
        );
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(
            super::escape(r#"<a href="x">&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
    }
}
