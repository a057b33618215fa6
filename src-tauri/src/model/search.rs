//! The search box of the Units and Hosts views (and `--find` of `unit list` / `host list`):
//! a query is words that must all match, each anywhere in a row's fields, case-insensitively,
//! as plain text (no patterns: `.`, `*`, `%`, `\` mean themselves). A word may name the field
//! it must match: `name:`, `unit:`, `host:`, `address:` (or `ip:`), `mac:`, `state:`.
//! A MAC may be typed with `-` instead of `:`. Pure: no I/O.

use super::{quote_input, ValidationError};

/// The longest query accepted (a search box, not a document).
pub const MAX_QUERY_CHARS: usize = 200;
/// At most this many words.
pub const MAX_QUERY_WORDS: usize = 16;

/// A row's field a word can be limited to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Name,
    Unit,
    Host,
    Address,
    Mac,
    State,
}

impl Field {
    fn parse(prefix: &str) -> Option<Self> {
        Some(match prefix {
            "name" => Self::Name,
            "unit" => Self::Unit,
            "host" => Self::Host,
            "address" | "ip" | "addr" => Self::Address,
            "mac" => Self::Mac,
            "state" => Self::State,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Word {
    field: Option<Field>,
    text: String,
}

/// A parsed search query; the empty query matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Query {
    words: Vec<Word>,
}

/// What a row offers to the search, by field (a field it does not have: empty).
#[derive(Debug, Clone, Copy, Default)]
pub struct Fields<'a> {
    pub name: &'a str,
    pub unit: &'a str,
    pub host: &'a str,
    pub address: &'a str,
    pub mac: &'a str,
    /// Every state the row is in (e.g. the inventory's `running` and the host's `failed`).
    pub states: &'a [&'a str],
}

impl Query {
    /// Parses what was typed. Too long, too many words, control characters or an unknown
    /// `field:` are refused with the reason; nothing else is special.
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        let count = text.chars().count();
        if count > MAX_QUERY_CHARS {
            return Err(ValidationError::new(
                "search",
                format!("{count} characters is too long (at most {MAX_QUERY_CHARS})"),
            ));
        }
        if let Some(c) = text.chars().find(|c| c.is_control() && !c.is_whitespace()) {
            return Err(ValidationError::new(
                "search",
                format!(
                    "{} contains the control character {}; type plain text",
                    quote_input(text),
                    c.escape_default()
                ),
            ));
        }
        let mut words = Vec::new();
        for raw in text.split_whitespace() {
            let (field, rest) = match raw.split_once(':') {
                Some((p, rest)) if !p.is_empty() && p.chars().all(|c| c.is_ascii_alphabetic()) => {
                    match Field::parse(&p.to_ascii_lowercase()) {
                        Some(f) => (Some(f), rest),
                        // A MAC or an IPv6-like word: `52:54:…` is text, not a field.
                        None if p.chars().all(|c| c.is_ascii_hexdigit()) => (None, raw),
                        None => {
                            return Err(ValidationError::new(
                                "search",
                                format!(
                                    "{} is not a field to search; use name:, unit:, host:, address:, mac: or state:",
                                    quote_input(p)
                                ),
                            ))
                        }
                    }
                }
                _ => (None, raw),
            };
            if rest.is_empty() {
                continue;
            }
            words.push(Word {
                field,
                text: rest.to_lowercase(),
            });
        }
        if words.len() > MAX_QUERY_WORDS {
            return Err(ValidationError::new(
                "search",
                format!(
                    "{} words is too many (at most {MAX_QUERY_WORDS})",
                    words.len()
                ),
            ));
        }
        Ok(Self { words })
    }

    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// Whether every word is found in the row.
    pub fn matches(&self, row: &Fields<'_>) -> bool {
        self.words.iter().all(|w| {
            let has = |value: &str| contains_ci(value, &w.text);
            let mac = || has(row.mac) || contains_ci(row.mac, &w.text.replace('-', ":"));
            let state = || row.states.iter().any(|s| has(s));
            match w.field {
                Some(Field::Name) => has(row.name),
                Some(Field::Unit) => has(row.unit),
                Some(Field::Host) => has(row.host),
                Some(Field::Address) => has(row.address),
                Some(Field::Mac) => mac(),
                Some(Field::State) => state(),
                None => {
                    has(row.name)
                        || has(row.unit)
                        || has(row.host)
                        || has(row.address)
                        || mac()
                        || state()
                }
            }
        })
    }
}

/// `needle` (already lower case) in `hay`, ignoring case.
fn contains_ci(hay: &str, needle: &str) -> bool {
    if hay.is_ascii() {
        hay.to_ascii_lowercase().contains(needle)
    } else {
        hay.to_lowercase().contains(needle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server<'a>(
        name: &'a str,
        host: &'a str,
        address: &'a str,
        mac: &'a str,
        states: &'a [&'a str],
    ) -> Fields<'a> {
        Fields {
            name,
            unit: "shop",
            host,
            address,
            mac,
            states,
        }
    }

    fn rows() -> Vec<Fields<'static>> {
        vec![
            server(
                "shop-1",
                "h1",
                "10.0.1.1",
                "52:54:00:00:01:01",
                &["running"],
            ),
            server(
                "shop-2",
                "h2",
                "10.0.1.2",
                "52:54:00:00:01:02",
                &["stopped"],
            ),
            server(
                "shop-12",
                "h12",
                "10.0.1.12",
                "52:54:00:00:01:0c",
                &["running", "failed"],
            ),
        ]
    }

    fn found(q: &str) -> Vec<&'static str> {
        let q = Query::parse(q).unwrap();
        rows()
            .into_iter()
            .filter(|r| q.matches(r))
            .map(|r| r.name)
            .collect()
    }

    #[test]
    fn each_field_finds_its_server() {
        assert_eq!(
            found(""),
            ["shop-1", "shop-2", "shop-12"],
            "empty: everything"
        );
        assert_eq!(found("   "), ["shop-1", "shop-2", "shop-12"]);
        assert_eq!(found("shop-2"), ["shop-2"]);
        assert_eq!(found("10.0.1.12"), ["shop-12"], "by address");
        assert_eq!(found("52:54:00:00:01:02"), ["shop-2"], "by MAC");
        assert_eq!(
            found("52-54-00-00-01-0C"),
            ["shop-12"],
            "a MAC with dashes, upper case"
        );
        assert_eq!(found("host:h2"), ["shop-2"]);
        assert_eq!(found("stopped"), ["shop-2"], "by state");
        assert_eq!(
            found("state:failed"),
            ["shop-12"],
            "by the host's state too"
        );
        assert_eq!(
            found("SHOP-1"),
            ["shop-1", "shop-12"],
            "case does not matter"
        );
        assert_eq!(
            found("unit:shop running"),
            ["shop-1", "shop-12"],
            "all words must match"
        );
        assert!(found("nothing-like-this").is_empty());
    }

    #[test]
    fn a_field_limits_the_word_to_it() {
        // "h1" is in shop-1's host only; with name: it is nowhere.
        assert_eq!(found("host:h1"), ["shop-1", "shop-12"]);
        assert!(found("name:h1").is_empty());
        assert_eq!(found("address:.12"), ["shop-12"]);
        assert_eq!(found("ip:10.0.1.2"), ["shop-2"]);
        assert_eq!(found("mac:01:0c"), ["shop-12"]);
        assert_eq!(
            found("Name:shop-2"),
            ["shop-2"],
            "the field's name in any case"
        );
        assert_eq!(
            found("state:"),
            ["shop-1", "shop-2", "shop-12"],
            "a field with no text is no word"
        );
    }

    #[test]
    fn hostile_text_is_plain_text() {
        for q in [
            ".*",
            "%",
            "'; DROP TABLE servers; --",
            "\\",
            "shop-[12]",
            "<script>",
        ] {
            assert!(found(q).is_empty(), "{q} matched something");
        }
        assert_eq!(
            found("."),
            ["shop-1", "shop-2", "shop-12"],
            "a dot is a dot (every address has one)"
        );
        assert!(found("ünïcödé ☃").is_empty());
    }

    #[test]
    fn too_long_control_characters_and_unknown_fields_are_refused_with_the_reason() {
        let huge = "a".repeat(MAX_QUERY_CHARS + 1);
        let e = Query::parse(&huge).unwrap_err();
        assert!(e.to_string().contains("201 characters is too long"), "{e}");
        let e = Query::parse(&"x".repeat(1_000_000)).unwrap_err();
        assert!(e.to_string().contains("too long"), "{e}");
        assert!(
            Query::parse(&"a".repeat(MAX_QUERY_CHARS)).is_ok(),
            "the limit itself is fine"
        );
        let words = vec!["w"; MAX_QUERY_WORDS + 1].join(" ");
        assert!(Query::parse(&words)
            .unwrap_err()
            .to_string()
            .contains("too many"));
        let e = Query::parse("shop\u{0}1").unwrap_err();
        assert!(e.to_string().contains("control character"), "{e}");
        let e = Query::parse("color:red").unwrap_err();
        assert!(e.to_string().contains("not a field"), "{e}");
        assert!(
            Query::parse("tab\tand\nnewline").is_ok(),
            "whitespace separates words"
        );
    }
}
