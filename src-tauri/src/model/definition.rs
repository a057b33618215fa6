//! The app-server definition file, `definition.toml` (the brief's アプリケーションサーバ定義).
//! Documented with an annotated example in docs/definition-file.md (= [`EXAMPLE`]).
//!
//! Parsing reports every problem as `file:line:column: what was expected`: TOML syntax errors,
//! unknown or missing keys and wrong types come from the parser with their span; the checks
//! below (port 0, empty hooks, bad package names, unknown template variables, …) use the spans
//! of the values they check.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use toml::Spanned;

pub const FILE_NAME: &str = "definition.toml";
/// The largest definition file: 1 MiB.
pub const MAX_FILE_BYTES: usize = 1 << 20;
/// The most packages a definition lists. The payload disk's writer (fatfs) scans the folder
/// for every file it makes and again for every 8.3 short name already taken: 500 files with
/// names alike took 9 s, 1,000 over six minutes. More files travel as one archive.
pub const MAX_PACKAGES: usize = 256;

/// The annotated example: what `def create` writes and docs/definition-file.md shows.
pub const EXAMPLE: &str = include_str!("definition_example.toml");

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    pub server: Server,
    pub health: Health,
    pub hooks: Hooks,
    /// Environment of every hook.
    #[serde(default)]
    pub env: BTreeMap<Spanned<String>, Spanned<String>>,
    /// Configuration files rendered per server before the start hook.
    #[serde(default)]
    pub config: Vec<ConfigFile>,
    /// Kept by Flotilla (`def add-package`), not typed by hand.
    #[serde(default)]
    pub packages: Vec<Package>,
    #[serde(default)]
    pub resources: Resources,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub name: Spanned<String>,
    /// What runs (`httpd`, `tomcat`, `nginx`, …): informational.
    pub kind: Spanned<String>,
    /// The port the load balancer sends traffic to.
    pub port: Spanned<u16>,
}

fn default_status() -> Spanned<u16> {
    Spanned::new(0..0, 200)
}
fn default_interval() -> Spanned<u32> {
    Spanned::new(0..0, 2)
}
fn default_timeout() -> Spanned<u32> {
    Spanned::new(0..0, 1)
}
fn default_two() -> Spanned<u32> {
    Spanned::new(0..0, 2)
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// HTTP path on the server's port, e.g. `/health`.
    pub path: Spanned<String>,
    #[serde(default = "default_status")]
    pub expect_status: Spanned<u16>,
    #[serde(default = "default_interval")]
    pub interval_s: Spanned<u32>,
    #[serde(default = "default_timeout")]
    pub timeout_s: Spanned<u32>,
    /// Successes in a row before the server counts as healthy.
    #[serde(default = "default_two")]
    pub rise: Spanned<u32>,
    /// Failures in a row before it counts as down.
    #[serde(default = "default_two")]
    pub fall: Spanned<u32>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    /// Shell run once per server after first boot, payload mounted.
    pub install: Spanned<String>,
    pub start: Spanned<String>,
    pub stop: Spanned<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Absolute path in the guest.
    pub path: Spanned<String>,
    /// Text with `{{ variable }}` placeholders (see [`VARIABLES`]).
    pub template: Spanned<String>,
    /// Octal file mode, default `0644`.
    #[serde(default)]
    pub mode: Option<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Package {
    pub file: Spanned<String>,
    pub sha256: Spanned<String>,
    pub size: Spanned<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    pub cpus: Option<Spanned<u32>>,
    pub memory_mib: Option<Spanned<u64>>,
    pub disk_gib: Option<Spanned<u32>>,
}

/// The most text the `[[config]]` files of one server render to, together: 32 KiB. They
/// travel in the server's cloud-init seed, whose `user-data` holds at most 64 KiB
/// (`guest/seed.rs`), base64-encoded (32 KiB become 43 KiB) beside the commands that write
/// them and Flotilla's own lines (mounting the payload, the per-boot script); a live update
/// sends the same commands through the guest agent.
pub const MAX_CONFIG_BYTES: usize = 32 * 1024;

/// The longest value a template variable can have for any server: names are DNS labels of at
/// most 63 characters, addresses dotted IPv4, numbers at most ten digits.
fn variable_max_len(name: &str, env: &BTreeMap<Spanned<String>, Spanned<String>>) -> u64 {
    let len = match name {
        "hostname" | "unit" => 63,
        "address" => 15,
        "port" => 5,
        "unit_version" | "server_index" => 10,
        other => other
            .strip_prefix("env.")
            .and_then(|n| env.iter().find(|(k, _)| k.get_ref() == n))
            .map_or(0, |(_, v)| v.get_ref().len()),
    };
    len as u64
}

/// The most bytes `template` renders to for any server (its text plus the longest value of
/// each variable, for every time it is used), counted without rendering anything.
fn rendered_max(template: &str, env: &BTreeMap<Spanned<String>, Spanned<String>>) -> u64 {
    let mut total = 0u64;
    let mut rest = template;
    while let Some(i) = rest.find("{{") {
        total = total.saturating_add(i as u64);
        let after = &rest[i + 2..];
        let Some(j) = after.find("}}") else {
            return total.saturating_add(rest.len() as u64 - i as u64);
        };
        total = total.saturating_add(variable_max_len(after[..j].trim(), env));
        rest = &after[j + 2..];
    }
    total.saturating_add(rest.len() as u64)
}

/// Variables a configuration template may use (besides `env.NAME`).
pub const VARIABLES: &[&str] = &[
    "hostname",
    "address",
    "port",
    "unit",
    "unit_version",
    "server_index",
];

/// One problem in a definition file, at a place in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct DefinitionError {
    pub file: String,
    pub line: u32,
    pub column: u32,
    pub message: String,
}

impl fmt::Display for DefinitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn position(text: &str, offset: usize) -> (u32, u32) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(col).unwrap_or(u32::MAX),
    )
}

struct Checker<'a> {
    file: &'a str,
    text: &'a str,
    errors: Vec<DefinitionError>,
}

impl Checker<'_> {
    fn at(&mut self, span: std::ops::Range<usize>, message: impl Into<String>) {
        let (line, column) = position(self.text, span.start);
        self.errors.push(DefinitionError {
            file: self.file.to_owned(),
            line,
            column,
            message: message.into(),
        });
    }
}

/// Checks a `[[config]]` path: an absolute file path in the guest of `A-Z a-z 0-9 / . _ - + @`
/// (it is written into a shell command of the seed), without `..`, not ending with `/`.
pub fn config_path_problem(path: &str) -> Option<String> {
    let ok = path.starts_with('/')
        && !path.ends_with('/')
        && path.len() <= 4096
        && !path.split('/').any(|part| part == "..")
        && path
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "/._-+@".contains(ch));
    (!ok).then(|| {
        format!(
            "{}: expected an absolute file path in the guest of A-Z a-z 0-9 / . _ - + @, \
             without '..'",
            super::quote_input(path)
        )
    })
}

/// The mode of a `[[config]]` file that gives none.
pub const DEFAULT_CONFIG_MODE: &str = "0644";

/// Checks a `[[config]]` mode: 3 or 4 octal digits, applied to the file exactly as written
/// (`chmod 0640`), so `"644"`, `"0644"` and `"2750"` are modes and `"rw-r--r--"`, `"0o644"`,
/// `"+644"`, `"64"` or `"00644"` are not.
pub fn config_mode_problem(mode: &str) -> Option<String> {
    let ok = (3..=4).contains(&mode.len()) && mode.bytes().all(|b| (b'0'..=b'7').contains(&b));
    (!ok).then(|| {
        format!(
            "{} is not a file mode; expected 3 or 4 octal digits like \"0644\" or \"640\"",
            super::quote_input(mode)
        )
    })
}

/// Characters a FAT long file name cannot hold (besides `/`, `\\` and control characters).
const FAT_FORBIDDEN: &[char] = &[':', '*', '?', '"', '<', '>', '|'];

/// Checks a package file name: one file name that the payload disk (FAT with long names) holds
/// as it is — printable, none of `/ \\ : * ? " < > |`, not starting with '.', not ending with
/// '.' or a space (FAT drops those), at most 255 bytes.
pub fn package_name_problem(name: &str) -> Option<String> {
    let q = || super::quote_input(name);
    if name.is_empty() {
        return Some("a package name must not be empty".into());
    }
    if name.len() > 255 {
        return Some(format!(
            "a package name is at most 255 bytes; this one has {}",
            name.len()
        ));
    }
    if name.contains('/') || name.contains('\\') {
        return Some(format!(
            "{} is a path; a package name is a single file name",
            q()
        ));
    }
    if name.starts_with('.') {
        return Some(format!("{} must not start with '.'", q()));
    }
    if name.chars().any(char::is_control) {
        return Some(format!(
            "{} contains control characters (NUL, newline, …)",
            q()
        ));
    }
    if let Some(c) = name.chars().find(|c| FAT_FORBIDDEN.contains(c)) {
        return Some(format!(
            "{} contains {c:?}, which the payload disk (FAT) cannot hold; \
             none of : * ? \" < > | may be used",
            q()
        ));
    }
    if name.ends_with('.') || name.ends_with(' ') {
        return Some(format!(
            "{} ends with '.' or a space, which the payload disk (FAT) drops",
            q()
        ));
    }
    if let Some(c) = name.chars().find(|c| u32::from(*c) > 0xFFFF) {
        return Some(format!(
            "{} contains {c:?} (U+{:04X}), outside the Basic Multilingual Plane: FAT long \
             names are UCS-2, so the payload disk cannot hold it",
            q(),
            u32::from(c)
        ));
    }
    None
}

/// Whether two package names are one file on the payload disk as far as their case goes:
/// equal in full Unicode upper case (how `fatfs`, which writes the disk, compares them:
/// `ß.txt` and `SS.txt`, `ς` and `σ`) or in lower case (`K`, the Kelvin sign, and `k`). Linux's
/// vfat folds ASCII only and Windows FAT simple upper case: both are covered.
pub fn package_names_collide(a: &str, b: &str) -> bool {
    let upper = |s: &str| s.chars().flat_map(char::to_uppercase).collect::<String>();
    upper(a) == upper(b) || a.to_lowercase() == b.to_lowercase()
}

fn template_variables(template: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(i) = rest.find("{{") {
        let after = &rest[i + 2..];
        match after.find("}}") {
            Some(j) => {
                out.push(after[..j].trim().to_owned());
                rest = &after[j + 2..];
            }
            None => {
                out.push(String::from("{{ without }}"));
                break;
            }
        }
    }
    out
}

fn env_name_ok(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 128
        && n.chars()
            .next()
            .is_some_and(|c| c.is_ascii_uppercase() || c == '_')
        && n.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// Parses and checks a definition file. `file` names it in the errors.
pub fn parse_definition(file: &str, text: &str) -> Result<Definition, Vec<DefinitionError>> {
    let mut c = Checker {
        file,
        text,
        errors: Vec::new(),
    };
    if text.len() > MAX_FILE_BYTES {
        c.at(
            0..0,
            format!(
                "the file is {} bytes; a definition file is at most 1 MiB",
                text.len()
            ),
        );
        return Err(c.errors);
    }
    if let Some(i) = text.find('\0') {
        c.at(i..i, "the file contains a NUL byte; it must be text");
        return Err(c.errors);
    }
    let def: Definition = match toml::from_str(text) {
        Ok(d) => d,
        Err(e) => {
            let msg = e.message().trim().to_owned();
            c.at(e.span().unwrap_or(0..0), msg);
            return Err(c.errors);
        }
    };
    let s = &def.server;
    let name = s.name.get_ref();
    if super::HostName::parse(name).is_err() {
        c.at(
            s.name.span(),
            format!(
                "server.name {}: expected 1-63 lowercase letters, digits and '-'",
                super::quote_input(name)
            ),
        );
    }
    if s.kind.get_ref().trim().is_empty() || s.kind.get_ref().len() > 64 {
        c.at(
            s.kind.span(),
            "server.kind: expected a short word like \"httpd\" (1-64 characters)",
        );
    }
    if *s.port.get_ref() == 0 {
        c.at(
            s.port.span(),
            "server.port: expected a port between 1 and 65535, not 0",
        );
    }
    let h = &def.health;
    let path = h.path.get_ref();
    if !path.starts_with('/')
        || path.len() > 1024
        || path.chars().any(|ch| ch.is_control() || ch.is_whitespace())
    {
        c.at(
            h.path.span(),
            format!(
                "health.path {}: expected an HTTP path starting with '/', without spaces",
                super::quote_input(path)
            ),
        );
    }
    if !(100..=599).contains(h.expect_status.get_ref()) {
        c.at(
            h.expect_status.span(),
            "health.expect_status: expected an HTTP status between 100 and 599",
        );
    }
    for (key, v) in [
        ("interval_s", &h.interval_s),
        ("timeout_s", &h.timeout_s),
        ("rise", &h.rise),
        ("fall", &h.fall),
    ] {
        if !(1..=3600).contains(v.get_ref()) {
            c.at(
                v.span(),
                format!("health.{key}: expected a number between 1 and 3600"),
            );
        }
    }
    if h.timeout_s.get_ref() > h.interval_s.get_ref() {
        c.at(
            h.timeout_s.span(),
            "health.timeout_s: must not be longer than health.interval_s",
        );
    }
    for (key, hook) in [
        ("install", &def.hooks.install),
        ("start", &def.hooks.start),
        ("stop", &def.hooks.stop),
    ] {
        if hook.get_ref().trim().is_empty() {
            c.at(
                hook.span(),
                format!("hooks.{key}: expected a shell command; it is empty"),
            );
        } else if hook.get_ref().len() > 64 * 1024 {
            c.at(hook.span(), format!("hooks.{key}: at most 64 KiB"));
        }
    }
    for (k, v) in &def.env {
        if !env_name_ok(k.get_ref()) {
            c.at(
                k.span(),
                format!(
                    "env: {} is not a variable name like APP_MODE (A-Z, 0-9, _)",
                    super::quote_input(k.get_ref())
                ),
            );
        }
        if v.get_ref().len() > 64 * 1024 {
            c.at(v.span(), "env: a value is at most 64 KiB");
        }
    }
    let mut paths = std::collections::BTreeSet::new();
    // What the config files render to at most, together, so far: refused past the limit
    // before anything is rendered (a variable used a million times would be gigabytes).
    let mut rendered_total = 0u64;
    let mut over_limit = false;
    for cf in &def.config {
        let p = cf.path.get_ref();
        if let Some(problem) = config_path_problem(p) {
            c.at(cf.path.span(), format!("config.path {problem}"));
        } else if !paths.insert(p.clone()) {
            c.at(
                cf.path.span(),
                format!("config.path {}: rendered twice", super::quote_input(p)),
            );
        }
        for var in template_variables(cf.template.get_ref()) {
            let known = VARIABLES.contains(&var.as_str())
                || var
                    .strip_prefix("env.")
                    .is_some_and(|n| def.env.keys().any(|k| k.get_ref() == n));
            if !known {
                c.at(
                    cf.template.span(),
                    format!(
                        "config.template: unknown variable {}; known: {}, env.NAME",
                        super::quote_input(&var),
                        VARIABLES.join(", ")
                    ),
                );
            }
        }
        if let Some(mode) = &cf.mode {
            if let Some(problem) = config_mode_problem(mode.get_ref()) {
                c.at(mode.span(), format!("config.mode: {problem}"));
            }
        }
        let most = rendered_max(cf.template.get_ref(), &def.env);
        rendered_total = rendered_total.saturating_add(most);
        if !over_limit && rendered_total > MAX_CONFIG_BYTES as u64 {
            over_limit = true;
            let before = rendered_total - most;
            let with = if before > 0 {
                format!(", {before} bytes with the config files before it")
            } else {
                String::new()
            };
            c.at(
                cf.template.span(),
                format!(
                    "config.template of {}: renders to up to {most} bytes for a server{with}; \
                     the config files of a definition render to at most {MAX_CONFIG_BYTES} \
                     bytes (32 KiB) together: they travel base64-encoded in the server's \
                     64 KiB cloud-init seed. Put large files into a package instead",
                    super::quote_input(cf.path.get_ref()),
                ),
            );
        }
    }
    if let Some(p) = def.packages.get(MAX_PACKAGES) {
        c.at(
            p.file.span(),
            format!(
                "packages: {} packages; a definition holds at most {MAX_PACKAGES} (the payload \
                 disk's folder); pack more files into an archive",
                def.packages.len()
            ),
        );
    }
    let mut names: Vec<&String> = Vec::new();
    for p in &def.packages {
        let file = p.file.get_ref();
        if let Some(problem) = package_name_problem(file) {
            c.at(p.file.span(), format!("packages.file: {problem}"));
        } else if let Some(first) = names
            .iter()
            .find(|n| package_names_collide(n, file))
            .copied()
        {
            let how = if first == file {
                "listed twice".to_owned()
            } else {
                format!(
                    "the same file as {} on the payload disk, whose names ignore case \
                     (in Unicode: ß is SS, ς is Σ)",
                    super::quote_input(first)
                )
            };
            c.at(
                p.file.span(),
                format!("packages.file {}: {how}", super::quote_input(file)),
            );
        } else {
            names.push(file);
        }
        let sum = p.sha256.get_ref();
        if sum.len() != 64
            || !sum
                .chars()
                .all(|ch| ch.is_ascii_hexdigit() && !ch.is_ascii_uppercase())
        {
            c.at(
                p.sha256.span(),
                "packages.sha256: expected 64 lowercase hex digits (Flotilla fills it in)",
            );
        }
    }
    let r = &def.resources;
    if let Some(v) = &r.cpus {
        if !(1..=256).contains(v.get_ref()) {
            c.at(v.span(), "resources.cpus: expected 1 to 256");
        }
    }
    if let Some(v) = &r.memory_mib {
        if !(64..=1 << 22).contains(v.get_ref()) {
            c.at(v.span(), "resources.memory_mib: expected 64 to 4194304");
        }
    }
    if let Some(v) = &r.disk_gib {
        if !(1..=65536).contains(v.get_ref()) {
            c.at(v.span(), "resources.disk_gib: expected 1 to 65536");
        }
    }
    if c.errors.is_empty() {
        Ok(def)
    } else {
        Err(c.errors)
    }
}

/// Renders a configuration template for one server, to at most `limit` bytes: past it the
/// rendering stops (nothing larger is ever held) and is refused. Unknown variables are
/// refused (parsing already checked them and the size, so this fails only for a definition
/// that was never parsed).
pub fn render_template(
    template: &str,
    vars: &BTreeMap<String, String>,
    limit: usize,
) -> Result<String, String> {
    let mut out = String::with_capacity(template.len().min(limit));
    let push = |out: &mut String, piece: &str| {
        if out.len().saturating_add(piece.len()) > limit {
            return Err(format!("renders to more than {limit} bytes"));
        }
        out.push_str(piece);
        Ok(())
    };
    let mut rest = template;
    while let Some(i) = rest.find("{{") {
        push(&mut out, &rest[..i])?;
        let after = &rest[i + 2..];
        let j = after.find("}}").ok_or("a '{{' without '}}'")?;
        let name = after[..j].trim();
        let value = vars
            .get(name)
            .ok_or_else(|| format!("unknown variable {name:?}"))?;
        push(&mut out, value)?;
        rest = &after[j + 2..];
    }
    push(&mut out, rest)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        parse_definition("definition.toml", text)
            .expect_err("should be refused")
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn the_example_parses_and_round_trips() {
        let d = parse_definition("definition.toml", EXAMPLE).unwrap();
        assert_eq!(d.server.name.get_ref(), "shop");
        assert_eq!(*d.server.port.get_ref(), 8080);
        assert_eq!(*d.health.rise.get_ref(), 2);
        let again = toml::to_string(&d).unwrap();
        let back = parse_definition("x", &again).unwrap();
        assert_eq!(back, d, "serialize → parse gives the same definition");
    }

    #[test]
    fn every_error_names_file_line_and_column() {
        let bad_port = EXAMPLE.replace("port = 8080", "port = 0");
        let e = errors(&bad_port);
        let line = EXAMPLE
            .lines()
            .position(|l| l.starts_with("port = 8080"))
            .unwrap()
            + 1;
        assert_eq!(
            e,
            [format!(
                "definition.toml:{line}:8: server.port: expected a port between 1 and 65535, not 0"
            )]
        );

        let e = errors(&EXAMPLE.replace("port = 8080", "port = 70000"));
        assert!(
            e[0].starts_with(&format!("definition.toml:{line}:8: ")),
            "{e:?}"
        );
        assert!(e[0].contains("u16") || e[0].contains("70000"), "{e:?}");

        let e = errors(&EXAMPLE.replace("[health]", "[health]\nintervall = 3"));
        assert!(
            e[0].contains("unknown field `intervall`") && e[0].contains("expected"),
            "{e:?}"
        );

        let e = errors(
            &EXAMPLE
                .lines()
                .filter(|l| !l.starts_with("kind ="))
                .collect::<Vec<_>>()
                .join("\n"),
        );
        assert!(e[0].contains("missing field `kind`"), "{e:?}");

        let e = errors("[server\nname = 1");
        assert!(e[0].starts_with("definition.toml:1:"), "{e:?}");

        let e = errors(&EXAMPLE.replace("stop = \"", "stop = \"  \" # was: \""));
        assert!(
            e.iter()
                .any(|m| m.contains("hooks.stop: expected a shell command; it is empty")),
            "{e:?}"
        );

        let e = errors(&EXAMPLE.replace("{{ hostname }}", "{{ hostnmae }}"));
        assert!(
            e.iter()
                .any(|m| m.contains("unknown variable \"hostnmae\"")),
            "{e:?}"
        );

        let e = errors(&format!(
            "{EXAMPLE}\n[[packages]]\nfile = \"../etc/passwd\"\nsha256 = \"{}\"\nsize = 1\n",
            "a".repeat(64)
        ));
        assert!(e.iter().any(|m| m.contains("is a path")), "{e:?}");
        let e = errors(&format!(
            "{EXAMPLE}\n[[packages]]\nfile = \"{}\"\nsha256 = \"{}\"\nsize = 1\n",
            "p".repeat(300),
            "a".repeat(64)
        ));
        assert!(e.iter().any(|m| m.contains("at most 255 bytes")), "{e:?}");
        let e = errors(&format!("{}\0", EXAMPLE));
        assert!(e[0].contains("NUL"), "{e:?}");
    }

    #[test]
    fn config_paths_are_what_the_deploy_can_write() {
        for ok in ["/etc/shop/server.conf", "/srv/a_b-c+d@e.txt", "/x"] {
            assert_eq!(config_path_problem(ok), None, "{ok}");
        }
        for bad in [
            "etc/x",
            "/etc/../x",
            "/etc/",
            "/",
            "/etc/my file",
            "/etc/$(reboot)",
            "/etc/a;b",
            "/etc/é",
            "/etc/a\\nb",
        ] {
            let text = EXAMPLE.replace("/etc/shop/server.conf", bad);
            let e = errors(&text);
            assert!(
                e.iter()
                    .any(|m| m.contains("config.path") && m.contains("absolute file path")),
                "{bad:?}: {e:?}"
            );
        }
    }

    #[test]
    fn config_modes_are_three_or_four_octal_digits() {
        for ok in ["644", "0644", "0600", "2750", "7777", "000"] {
            assert_eq!(config_mode_problem(ok), None, "{ok}");
            let text = EXAMPLE.replace("mode = \"0644\"", &format!("mode = \"{ok}\""));
            parse_definition("definition.toml", &text).unwrap_or_else(|e| panic!("{ok}: {e:?}"));
        }
        let line = EXAMPLE
            .lines()
            .position(|l| l.starts_with("mode = \"0644\""))
            .unwrap()
            + 1;
        for bad in [
            "",
            "64",
            "00644",
            "0648",
            "0o644",
            "+644",
            "-644",
            " 644",
            "rw-r--r--",
            "0x1a4",
            "٦٤٤",
            "0644\n",
        ] {
            let text = EXAMPLE.replace("mode = \"0644\"", &format!("mode = {bad:?}"));
            let e = errors(&text);
            assert_eq!(e.len(), 1, "{bad:?}: {e:?}");
            assert!(
                e[0].starts_with(&format!("definition.toml:{line}:8: config.mode: "))
                    && e[0].contains("3 or 4 octal digits"),
                "{bad:?}: {e:?}"
            );
        }
        let e = errors(&EXAMPLE.replace("mode = \"0644\"", "mode = 420"));
        assert!(
            e[0].contains("config.mode") || e[0].contains("string"),
            "{e:?}"
        );
    }

    #[test]
    fn several_problems_are_reported_together() {
        let text = EXAMPLE
            .replace("port = 8080", "port = 0")
            .replace("path = \"/health\"", "path = \"health\"");
        assert_eq!(errors(&text).len(), 2);
    }

    #[test]
    fn package_names() {
        for ok in [
            "app.tar.gz",
            "my app-1.0.war",
            "データ.zip",
            "a+b=c,d;e[1]{2}(3)&'#%@!~^`$.bin",
            &"x".repeat(255),
        ] {
            assert_eq!(package_name_problem(ok), None, "{ok}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("a/b", "path"),
            (".", "'.'"),
            ("..", "'.'"),
            (".hidden", "'.'"),
            ("a\0b", "control"),
            ("a\u{7f}b", "control"),
            ("a\tb", "control"),
            ("/abs", "path"),
            ("a\\b", "path"),
            ("a:b", "FAT"),
            ("a*b", "FAT"),
            ("what?.txt", "FAT"),
            ("say\"hi\".txt", "FAT"),
            ("<a>", "FAT"),
            ("a|b", "FAT"),
            ("trailing.", "drops"),
            ("trailing ", "drops"),
            (&"x".repeat(256), "255 bytes"),
            (&"デ".repeat(86), "255 bytes"),
            ("app-\u{1F600}.tar.gz", "Basic Multilingual Plane"),
            ("\u{10000}", "U+10000"),
            ("\u{10FFFF}x", "UCS-2"),
        ] {
            let problem = package_name_problem(bad).unwrap_or_else(|| panic!("{bad:?} passed"));
            assert!(problem.contains(why), "{bad:?}: {problem}");
            assert!(problem.len() < 300, "{bad:?}: a short message: {problem}");
        }
    }

    fn with_packages(files: &[&str]) -> String {
        let mut text = EXAMPLE.to_owned();
        for f in files {
            text.push_str(&format!(
                "\n[[packages]]\nfile = \"{f}\"\nsha256 = \"{}\"\nsize = 1\n",
                "a".repeat(64)
            ));
        }
        text
    }

    #[test]
    fn package_names_are_unique_ignoring_case() {
        parse_definition("d", &with_packages(&["a.bin", "b.bin"])).unwrap();
        let e = errors(&with_packages(&["App.tar.gz", "b.bin", "app.TAR.gz"]));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].contains("\"app.TAR.gz\": the same file as \"App.tar.gz\"")
                && e[0].contains("ignore case"),
            "{e:?}"
        );
        let line = with_packages(&["App.tar.gz", "b.bin"]).lines().count() + 3;
        assert!(
            e[0].starts_with(&format!("definition.toml:{line}:8:")),
            "{e:?}"
        );
        let e = errors(&with_packages(&["x.bin", "x.bin"]));
        assert!(e[0].contains("listed twice"), "{e:?}");
        let e = errors(&with_packages(&["Ä.bin", "ä.bin"]));
        assert!(e[0].contains("ignore case"), "{e:?}");
        // As fatfs compares them (full Unicode upper case), and as lower case does.
        for pair in [
            ["ß.txt", "SS.txt"],
            ["straße.conf", "STRASSE.conf"],
            ["σ.conf", "ς.conf"],
            ["ǅ.txt", "ǆ.txt"],
            ["\u{212A}.bin", "k.bin"],
        ] {
            let e = errors(&with_packages(&pair));
            assert!(
                e.len() == 1 && e[0].contains("ignore case"),
                "{pair:?}: {e:?}"
            );
        }
        parse_definition(
            "d",
            &with_packages(&["é.txt", "e\u{301}.txt", "ss.txt", "s.txt"]),
        )
        .unwrap();
        let many: Vec<String> = (0..=MAX_PACKAGES).map(|i| format!("p{i}.bin")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let e = errors(&with_packages(&refs));
        assert!(
            e.len() == 1 && e[0].contains("257 packages") && e[0].contains("at most 256"),
            "{e:?}"
        );
        parse_definition("d", &with_packages(&refs[..MAX_PACKAGES])).unwrap();
        let e = errors(&with_packages(&["con:1"]));
        assert!(
            e[0].contains("packages.file") && e[0].contains("FAT"),
            "{e:?}"
        );
    }

    /// `EXAMPLE` with its `[env]` and `[[config]]` replaced.
    fn with_config(env: &str, configs: &[(&str, &str)]) -> String {
        let start = EXAMPLE.find("[env]").unwrap();
        let end = EXAMPLE.find("[resources]").unwrap();
        let mut text = format!("{}[env]\n{env}\n", &EXAMPLE[..start]);
        for (path, template) in configs {
            text.push_str(&format!(
                "[[config]]\npath = \"{path}\"\ntemplate = '''{template}'''\n"
            ));
        }
        text.push_str(&EXAMPLE[end..]);
        text
    }

    #[test]
    fn templates_that_could_render_too_much_are_refused_before_rendering() {
        let big = format!("BIG = \"{}\"", "x".repeat(64 * 1024));
        let gigabytes = "{{ env.BIG }}".repeat(70_000);
        let hostnames = "{{hostname}}".repeat(80_000);
        let half = "y".repeat(MAX_CONFIG_BYTES / 2);
        for (env, configs, path, most) in [
            (
                &big[..],
                vec![("/etc/a.conf", &gigabytes[..])],
                "/etc/a.conf",
                70_000u64 * 65_536,
            ),
            (
                "",
                vec![("/etc/h.conf", &hostnames[..])],
                "/etc/h.conf",
                80_000 * 63,
            ),
            (
                "",
                vec![
                    ("/etc/1", &half[..]),
                    ("/etc/2", "{{address}}"),
                    ("/etc/3", &half[..]),
                ],
                "/etc/3",
                16_384,
            ),
        ] {
            let began = std::time::Instant::now();
            let e = errors(&with_config(env, &configs));
            assert!(
                began.elapsed() < std::time::Duration::from_secs(5),
                "nothing is rendered"
            );
            assert_eq!(e.len(), 1, "{e:?}");
            assert!(
                e[0].contains(&format!(
                    "config.template of \"{path}\": renders to up to {most} bytes"
                )) && e[0].contains("at most 32768 bytes"),
                "{e:?}"
            );
        }
        // Up to the limit, with the longest values the variables can take: accepted.
        let fits = format!("{}{{{{ hostname }}}}", "z".repeat(MAX_CONFIG_BYTES - 63));
        parse_definition("d", &with_config("", &[("/etc/f", &fits)])).unwrap();
        let over = format!("{}{{{{ hostname }}}}", "z".repeat(MAX_CONFIG_BYTES - 62));
        assert_eq!(errors(&with_config("", &[("/etc/f", &over)])).len(), 1);
    }

    #[test]
    fn templates_render_per_server() {
        let mut vars = BTreeMap::new();
        vars.insert("hostname".to_string(), "web-1".to_string());
        vars.insert("port".to_string(), "8080".to_string());
        assert_eq!(
            render_template("listen {{port}} on {{ hostname }}\n", &vars, 100).unwrap(),
            "listen 8080 on web-1\n"
        );
        assert!(render_template("{{ nope }}", &vars, 100).is_err());
        assert!(render_template("{{ port", &vars, 100).is_err());
        // The limit: exactly reached is fine, one byte more is refused; a template that would
        // be gigabytes stops at the limit.
        assert_eq!(render_template("{{port}}", &vars, 4).unwrap(), "8080");
        assert!(render_template("{{port}}!", &vars, 4).is_err());
        let huge = BTreeMap::from([("env.BIG".to_owned(), "x".repeat(64 * 1024))]);
        let many = "{{ env.BIG }}".repeat(90_000);
        let e = render_template(&many, &huge, MAX_CONFIG_BYTES).unwrap_err();
        assert!(e.contains("more than 32768 bytes"), "{e}");
    }
}
