//! What people look at without a client: the dashboard (`/`, `/servers/{id}`), SVG badges
//! (and the shields.io endpoint JSON) and the public status page of a cluster. Server-rendered from the stored snapshots and history;
//! no policy is called, nothing is written, and no admin-only field (keys, rejections,
//! labels, audit, pending commands) is ever rendered.

pub mod badge;
pub mod dashboard;
pub mod status;

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
    fn escapes_markup() {
        assert_eq!(
            super::escape(r#"<a href="x">&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
    }
}
