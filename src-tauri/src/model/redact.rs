//! Secrets in text: the password of a `scheme://user:password@host` (or of a bare
//! `user:password@host:port`) never leaves Flotilla in clear — not printed, journaled, audited
//! or logged. One function for every place that shows text from elsewhere.

use std::borrow::Cow;

/// `text` with the password of every `scheme://user:password@` replaced by `***`. The
/// authority of a URL ends at white space or a quote (a password may hold `/`, `?` or `#`),
/// and the last `@` before it ends the user part (a password may hold `@`). Text without
/// `://` and without white space is taken as a bare endpoint, whose authority ends at the
/// first `/`, `?` or `#`. A URL whose path holds `@` may be masked more than needed, never less.
/// Free text cannot tell where a raw password with white space or quotes ends: Flotilla never
/// writes one — load-balancer URLs are stored with their credentials percent-encoded
/// (`lb::caddy::canonical_admin`) and a single endpoint value is masked whole by
/// `lb::redact_credentials`.
pub fn redact(text: &str) -> Cow<'_, str> {
    if !text.contains('@') {
        return Cow::Borrowed(text);
    }
    if !text.contains("://") {
        if text.chars().any(char::is_whitespace) {
            return Cow::Borrowed(text);
        }
        let end = text.find(['/', '?', '#']).unwrap_or(text.len());
        return match mask(&text[..end]) {
            Some(m) => Cow::Owned(format!("{m}{}", &text[end..])),
            None => Cow::Borrowed(text),
        };
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut changed = false;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| matches!(c, '"' | '\'' | '<' | '>' | '`') || c.is_whitespace())
            .unwrap_or(tail.len());
        match mask(&tail[..end]) {
            Some(m) => {
                out.push_str(&m);
                changed = true;
            }
            None => out.push_str(&tail[..end]),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(text)
    }
}

/// `user:***@rest` for an authority with a password, else `None`.
fn mask(authority: &str) -> Option<String> {
    let at = authority.rfind('@')?;
    let userinfo = &authority[..at];
    let colon = userinfo.find(':')?;
    Some(format!("{}:***{}", &userinfo[..colon], &authority[at..]))
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_masked_and_nothing_else_changes() {
        for (text, want) in [
            (
                "PATCH http://admin:s3cret@10.0.0.1:2019/id/x failed",
                "PATCH http://admin:***@10.0.0.1:2019/id/x failed",
            ),
            (
                "http://admin:s3cret@10.0.0.5:2019/",
                "http://admin:***@10.0.0.5:2019/",
            ),
            // Passwords with `/`, `@`, `?`, `#` and percent-encoding.
            (
                "http://admin:Ab/cd+ef=@10.0.0.5:2019",
                "http://admin:***@10.0.0.5:2019",
            ),
            ("http://a:p@ss@h:1", "http://a:***@h:1"),
            ("http://a:p?x#y@h:1/z", "http://a:***@h:1/z"),
            ("http://a:p%2Fw@h:1", "http://a:***@h:1"),
            (
                "uri=qemu+ssh://root:p@ss:w0rd@h1/system?keyfile=/k",
                "uri=qemu+ssh://root:***@h1/system?keyfile=/k",
            ),
            ("http://:s3cret@h:1", "http://:***@h:1"),
            (
                "two: http://a:b@x and \"https://c:d@y\"",
                "two: http://a:***@x and \"https://c:***@y\"",
            ),
            ("ends with http://u:p@", "ends with http://u:***@"),
            // A bare endpoint (refused input is quoted in its error).
            ("admin:s3cret@10.0.0.5:2019", "admin:***@10.0.0.5:2019"),
            // Nothing secret: unchanged.
            ("qemu+ssh://admin@h1/system", "qemu+ssh://admin@h1/system"),
            ("http://127.0.0.1:2019", "http://127.0.0.1:2019"),
            ("no url here: a:b@c", "no url here: a:b@c"),
            (
                "unix:/run/haproxy/admin.sock",
                "unix:/run/haproxy/admin.sock",
            ),
            ("unix:/tmp/a@b:c", "unix:/tmp/a@b:c"),
            ("tcp:10.0.0.1:9999", "tcp:10.0.0.1:9999"),
            ("http://", "http://"),
            ("", ""),
        ] {
            assert_eq!(redact(text), want, "{text}");
        }
    }
}
