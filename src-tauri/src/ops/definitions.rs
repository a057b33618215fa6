//! App-server definition directories: `definition.toml` + packages, in
//! `<data dir>/definitions/<name>/<hash>/`, one immutable directory per version, named by its
//! content hash.
//!
//! Every change builds the next version in a `.partial` staging directory — packages of the
//! previous version hard-linked (never copied again), new files streamed in with sha256 and
//! size, the definition file validated as a whole — and renames it into place only when every
//! file is in. A failure removes the staging directory: no half-added package, no new version.

use super::images::{ImageProgress, ProgressFn};
use super::{Engine, OpError};
use crate::inventory::{DefinitionVersion, InventoryError};
use crate::library::{self, LibraryError};
use crate::model::definition::{
    self, package_name_problem, package_names_collide, Definition, DefinitionError,
};
use crate::model::{HostName, ValidationError};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// The create wizard's form: the first version's key values (the rest from the example).
#[derive(Debug, Clone, serde::Deserialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct DefinitionForm {
    pub name: String,
    pub kind: String,
    pub port: u32,
    pub health_path: String,
    pub install: String,
    pub start: String,
    pub stop: String,
}

/// A version with its content, for `def show`.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct DefinitionView {
    pub version: DefinitionVersion,
    pub text: String,
    pub packages: Vec<PackageView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "desktop", derive(specta::Type))]
pub struct PackageView {
    pub file: String,
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct InvalidDefinition(pub Vec<DefinitionError>);

fn invalid(errors: Vec<DefinitionError>) -> OpError {
    OpError::Invalid(ValidationError::new(
        "definition",
        InvalidDefinition(errors).to_string(),
    ))
}

fn packages_of(d: &Definition) -> Vec<PackageView> {
    d.packages
        .iter()
        .map(|p| PackageView {
            file: p.file.get_ref().clone(),
            sha256: p.sha256.get_ref().clone(),
            size: *p.size.get_ref(),
        })
        .collect()
}

/// The content hash of a version: its definition text and its packages (name + sha256).
fn content_hash(text: &str, packages: &[PackageView]) -> String {
    let mut h = Sha256::new();
    h.update(b"definition.toml\0");
    h.update(Sha256::digest(text.as_bytes()));
    let mut sorted: Vec<&PackageView> = packages.iter().collect();
    sorted.sort_by(|a, b| a.file.cmp(&b.file));
    for p in sorted {
        h.update(b"\npackages/");
        h.update(p.file.as_bytes());
        h.update(b"\0");
        h.update(p.sha256.as_bytes());
    }
    library::hex(&h.finalize())
}

fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> OpError + '_ {
    move |source| {
        OpError::Library(LibraryError::Write {
            path: path.to_owned(),
            source,
        })
    }
}

/// Why a file of this type cannot be read as a file's content, or `None` for a regular file.
fn file_type_problem(ft: std::fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_file() {
        None
    } else if ft.is_symlink() {
        Some("is a symbolic link; give the file it points to")
    } else if ft.is_dir() {
        Some("is a directory, not a file")
    } else if ft.is_fifo() {
        Some("is a named pipe (FIFO), not a regular file; nothing was read from it")
    } else if ft.is_char_device() || ft.is_block_device() {
        Some("is a device, not a regular file; nothing was read from it")
    } else if ft.is_socket() {
        Some("is a socket, not a regular file")
    } else {
        Some("is not a regular file")
    }
}

/// Opens a file the user named, for reading, without ever waiting or touching a device: its
/// type is checked before it is opened (symbolic links, FIFOs, devices and sockets are
/// refused), it is opened with `O_NONBLOCK | O_NOFOLLOW` (a FIFO or link swapped in meanwhile
/// is neither waited on nor followed) and checked again once open. `limit` is the largest size
/// accepted, with the name of what the file is for the message. Returns the file and its size.
fn open_regular(path: &Path, limit: Option<(u64, &str)>) -> Result<(std::fs::File, u64), OpError> {
    use std::os::unix::fs::OpenOptionsExt;
    let bad = |reason: String| {
        OpError::Library(LibraryError::NotAnImage {
            path: path.to_owned(),
            reason,
        })
    };
    let unreadable = |source| {
        OpError::Library(LibraryError::Unreadable {
            path: path.to_owned(),
            source,
        })
    };
    let check = |meta: &std::fs::Metadata| -> Result<u64, OpError> {
        if let Some(problem) = file_type_problem(meta.file_type()) {
            return Err(bad(problem.into()));
        }
        match limit {
            Some((max, what)) if meta.len() > max => Err(bad(format!(
                "is {} bytes; {what} is at most {max} bytes; nothing was read from it",
                meta.len()
            ))),
            _ => Ok(meta.len()),
        }
    };
    check(&std::fs::symlink_metadata(path).map_err(unreadable)?)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)
        .map_err(unreadable)?;
    let size = check(&file.metadata().map_err(unreadable)?)?;
    Ok((file, size))
}

/// Reads a definition file the user named: a regular file of at most
/// [`definition::MAX_FILE_BYTES`], UTF-8 text. Never blocks on a FIFO, never reads more than
/// the limit even from a file that grows meanwhile.
pub fn read_definition_file(path: &Path) -> Result<String, OpError> {
    let max = definition::MAX_FILE_BYTES;
    let (file, _) = open_regular(path, Some((max as u64, "a definition file")))?;
    let mut bytes = Vec::new();
    file.take(max as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| {
            OpError::Library(LibraryError::Unreadable {
                path: path.to_owned(),
                source,
            })
        })?;
    let bad = |reason: String| {
        OpError::Library(LibraryError::NotAnImage {
            path: path.to_owned(),
            reason,
        })
    };
    if bytes.len() > max {
        return Err(bad(format!(
            "grew beyond {max} bytes while being read; a definition file is at most {max} bytes"
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        bad(format!(
            "is not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ))
    })
}

/// Checks a file offered as a package: a readable regular file (not a directory, not a
/// symbolic link, not a FIFO or device) whose name is a valid package name.
fn check_package_source(path: &Path) -> Result<String, OpError> {
    let bad = |reason: String| {
        OpError::Library(LibraryError::NotAnImage {
            path: path.to_owned(),
            reason,
        })
    };
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        return Err(bad(
            "is a directory; add the files in it (or pack it as an archive)".into(),
        ));
    }
    open_regular(path, None)?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| bad("has a file name that is not UTF-8".into()))?
        .to_owned();
    if let Some(problem) = package_name_problem(&name) {
        return Err(bad(problem));
    }
    Ok(name)
}

/// A file to copy into a new version as a package.
struct NewFile {
    src: PathBuf,
    /// Its name in `packages/`.
    file: String,
    /// The sha256 and size a definition file gave for it (import): the copy must match.
    expected: Option<(String, u64)>,
}

/// Copies `src` to `dest` streamed, returning (sha256, size).
fn copy_hashed(src: &Path, dest: &Path, progress: &ProgressFn) -> Result<(String, u64), OpError> {
    let unreadable = |source| {
        OpError::Library(LibraryError::Unreadable {
            path: src.to_owned(),
            source,
        })
    };
    let (mut input, total) = open_regular(src, None)?;
    let mut out = crate::files::private_file(dest).map_err(write_err(dest))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = input.read(&mut buf).map_err(unreadable)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(write_err(dest))?;
        done += n as u64;
        progress(ImageProgress {
            phase: "copying".into(),
            done,
            total,
        });
    }
    out.sync_all().map_err(write_err(dest))?;
    Ok((library::hex(&hasher.finalize()), done))
}

/// The package names a definition text lists, in order (none when it is not TOML: the full
/// check reports that).
fn listed_packages(text: &str) -> Vec<String> {
    let Ok(v) = toml::from_str::<toml::Value>(text) else {
        return Vec::new();
    };
    v.get("packages")
        .and_then(toml::Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|p| p.get("file").and_then(toml::Value::as_str))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Appends `[[packages]]` entries, keeping the rest of the file (comments too) as it is.
fn with_packages_added(text: &str, added: &[PackageView]) -> Result<String, OpError> {
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        invalid(vec![DefinitionError {
            file: definition::FILE_NAME.into(),
            line: 1,
            column: 1,
            message: e.to_string(),
        }])
    })?;
    let entry = doc
        .entry("packages")
        .or_insert(toml_edit::Item::ArrayOfTables(
            toml_edit::ArrayOfTables::new(),
        ));
    let list = entry.as_array_of_tables_mut().ok_or_else(|| {
        invalid(vec![DefinitionError {
            file: definition::FILE_NAME.into(),
            line: 1,
            column: 1,
            message: "packages must be written as [[packages]] tables".into(),
        }])
    })?;
    for p in added {
        let mut t = toml_edit::Table::new();
        t["file"] = toml_edit::value(p.file.clone());
        t["sha256"] = toml_edit::value(p.sha256.clone());
        t["size"] = toml_edit::value(i64::try_from(p.size).unwrap_or(i64::MAX));
        list.push(t);
    }
    Ok(doc.to_string())
}

fn with_package_removed(text: &str, file: &str) -> Result<String, OpError> {
    let mut doc: toml_edit::DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        invalid(vec![DefinitionError {
            file: definition::FILE_NAME.into(),
            line: 1,
            column: 1,
            message: e.to_string(),
        }])
    })?;
    if let Some(list) = doc
        .get_mut("packages")
        .and_then(|p| p.as_array_of_tables_mut())
    {
        list.retain(|t| t.get("file").and_then(|f| f.as_str()) != Some(file));
    }
    Ok(doc.to_string())
}

impl Engine {
    fn definitions_root(&self) -> PathBuf {
        self.library.parent().map_or_else(
            || self.library.join("../definitions"),
            |d| d.join("definitions"),
        )
    }

    fn definition_dir(&self, name: &str, hash: &str) -> PathBuf {
        self.definitions_root().join(name).join(hash)
    }

    fn definition_name(name: &str) -> Result<String, OpError> {
        Ok(HostName::parse(name.trim())
            .map_err(|e| ValidationError::new("definition", e.problem))?
            .to_string())
    }

    /// A version: `None` for the newest.
    fn definition_version(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<DefinitionVersion, OpError> {
        let history = self.inventory.definition_history(name)?;
        let found = match version {
            None => history.last().cloned(),
            Some(v) => history.into_iter().find(|h| h.version == v),
        };
        found.ok_or_else(|| {
            InventoryError::NotFound {
                kind: "definition",
                name: version.map_or_else(|| name.to_owned(), |v| format!("{name} v{v}")),
            }
            .into()
        })
    }

    pub fn def_show(&self, name: &str, version: Option<u32>) -> Result<DefinitionView, OpError> {
        let name = Self::definition_name(name)?;
        let v = self.definition_version(&name, version)?;
        let path = self
            .definition_dir(&name, &v.hash)
            .join(definition::FILE_NAME);
        let text = std::fs::read_to_string(&path)
            .map_err(|source| OpError::Library(LibraryError::Unreadable { path, source }))?;
        let def = definition::parse_definition(definition::FILE_NAME, &text).map_err(invalid)?;
        Ok(DefinitionView {
            version: v,
            packages: packages_of(&def),
            text,
        })
    }

    /// The parsed definition file of a version.
    pub(crate) fn def_parsed(&self, name: &str, version: u32) -> Result<Definition, OpError> {
        let view = self.def_show(name, Some(version))?;
        definition::parse_definition(definition::FILE_NAME, &view.text).map_err(invalid)
    }

    pub fn def_list(&self) -> Result<Vec<DefinitionVersion>, OpError> {
        Ok(self.inventory.definition_list()?)
    }

    pub fn def_history(&self, name: &str) -> Result<Vec<DefinitionVersion>, OpError> {
        let name = Self::definition_name(name)?;
        let h = self.inventory.definition_history(&name)?;
        if h.is_empty() {
            return Err(InventoryError::NotFound {
                kind: "definition",
                name,
            }
            .into());
        }
        Ok(h)
    }

    /// Builds and records a version: `text` with the packages of `base` that it still lists
    /// (hard-linked) plus `new_files` (copied in). Refuses a change that changes nothing.
    fn def_commit(
        &self,
        name: &str,
        base: Option<&DefinitionVersion>,
        text: &str,
        new_files: &[NewFile],
        change: &str,
        progress: &ProgressFn,
    ) -> Result<DefinitionVersion, OpError> {
        // Before any file is copied: the names must come through the payload disk as
        // themselves, in the order it is written (`guest::package_names_problem`).
        let mut listed = listed_packages(text);
        listed.extend(new_files.iter().map(|f| f.file.clone()));
        let listed: Vec<&str> = listed.iter().map(String::as_str).collect();
        // Too many packages, a name that is wrong on its own, or two that differ only in case
        // are reported by the definition's own check below, at their line in the text.
        let each_fine = listed.len() <= definition::MAX_PACKAGES
            && listed.iter().enumerate().all(|(i, n)| {
                package_name_problem(n).is_none()
                    && !listed[..i].iter().any(|m| package_names_collide(m, n))
            });
        if each_fine {
            if let Some(problem) = crate::guest::package_names_problem(&listed) {
                return Err(ValidationError::new(
                    "packages",
                    format!("{problem}; nothing was recorded"),
                )
                .into());
            }
        }
        let root = self.definitions_root().join(name);
        crate::files::private_dir_all(&root).map_err(write_err(&root))?;
        library::remove_partials(&root);
        let stage = root.join(format!(
            ".stage.{}.{}.partial",
            std::process::id(),
            crate::inventory::now_compact()
        ));
        let result = (|| -> Result<DefinitionVersion, OpError> {
            let pkgs = stage.join("packages");
            crate::files::private_dir_all(&pkgs).map_err(write_err(&pkgs))?;
            let mut added = Vec::new();
            for f in new_files {
                let (sha256, size) = copy_hashed(&f.src, &pkgs.join(&f.file), progress)?;
                if let Some((want_sum, want_size)) = &f.expected {
                    if *want_sum != sha256 || *want_size != size {
                        return Err(ValidationError::new(
                            "packages",
                            format!(
                                "packages/{}: the file has sha256 {sha256} ({size} bytes) but \
                                 definition.toml says sha256 {want_sum} ({want_size} bytes); \
                                 nothing was recorded",
                                f.file
                            ),
                        )
                        .into());
                    }
                }
                added.push(PackageView {
                    file: f.file.clone(),
                    sha256,
                    size,
                });
            }
            let text = if added.is_empty() {
                text.to_owned()
            } else {
                with_packages_added(text, &added)?
            };
            let def =
                definition::parse_definition(definition::FILE_NAME, &text).map_err(invalid)?;
            let packages = packages_of(&def);
            for p in &packages {
                if added.iter().any(|a| a.file == p.file) {
                    continue;
                }
                let from = base
                    .map(|b| self.definition_dir(name, &b.hash).join("packages").join(&p.file))
                    .filter(|f| f.is_file())
                    .ok_or_else(|| {
                        ValidationError::new("packages", format!("{} is listed but not in the directory; add it with def add-package", p.file))
                    })?;
                let to = pkgs.join(&p.file);
                std::fs::hard_link(&from, &to)
                    .or_else(|_| std::fs::copy(&from, &to).map(|_| ()))
                    .map_err(write_err(&to))?;
            }
            let file = stage.join(definition::FILE_NAME);
            crate::files::private_file(&file)
                .and_then(|mut f| f.write_all(text.as_bytes()))
                .map_err(write_err(&file))?;
            let hash = content_hash(&text, &packages);
            if base.is_some_and(|b| b.hash == hash) {
                return Err(
                    ValidationError::new("definition", "nothing changed; no new version").into(),
                );
            }
            let dest = root.join(&hash);
            if !dest.exists() {
                make_read_only(&stage)?;
                std::fs::rename(&stage, &dest).map_err(write_err(&dest))?;
            }
            // Recorded only if `base` is still the newest version. When another save won, the
            // directory stays unnamed by any version: harmless (content-addressed, reused by
            // the same content), and removing it could race with a process that saved that
            // same content meanwhile.
            Ok(self.inventory.definition_version_insert(
                name,
                &hash,
                change,
                base.map_or(0, |b| b.version),
            )?)
        })();
        if stage.exists() {
            let _ = make_writable_and_remove(&stage);
        }
        result
    }

    pub fn def_create(&self, name: &str) -> Result<DefinitionVersion, OpError> {
        let outcome = (|| {
            let name = Self::definition_name(name)?;
            if self.inventory.definition_exists(&name)? {
                return Err(InventoryError::Duplicate {
                    kind: "definition",
                    name,
                }
                .into());
            }
            let text =
                definition::EXAMPLE.replacen("name = \"shop\"", &format!("name = \"{name}\""), 1);
            self.def_commit(
                &name,
                None,
                &text,
                &[],
                "created from the example",
                &quiet(),
            )
        })();
        self.audit("definition.create", &format!("definition/{name}"), &outcome);
        outcome
    }

    /// Creates a definition from the wizard's form: the example with these values set.
    pub fn def_create_from_form(
        &self,
        form: &DefinitionForm,
    ) -> Result<DefinitionVersion, OpError> {
        let outcome = (|| {
            let name = Self::definition_name(&form.name)?;
            if self.inventory.definition_exists(&name)? {
                return Err(InventoryError::Duplicate {
                    kind: "definition",
                    name,
                }
                .into());
            }
            let mut doc: toml_edit::DocumentMut =
                definition::EXAMPLE
                    .parse()
                    .map_err(|e: toml_edit::TomlError| {
                        ValidationError::new("definition", e.to_string())
                    })?;
            doc["server"]["name"] = toml_edit::value(name.clone());
            doc["server"]["kind"] = toml_edit::value(form.kind.clone());
            doc["server"]["port"] = toml_edit::value(i64::from(form.port));
            doc["health"]["path"] = toml_edit::value(form.health_path.clone());
            doc["hooks"]["install"] = toml_edit::value(form.install.clone());
            doc["hooks"]["start"] = toml_edit::value(form.start.clone());
            doc["hooks"]["stop"] = toml_edit::value(form.stop.clone());
            self.def_commit(
                &name,
                None,
                &doc.to_string(),
                &[],
                "created with the wizard",
                &quiet(),
            )
        })();
        self.audit(
            "definition.create",
            &format!("definition/{}", form.name),
            &outcome,
        );
        outcome
    }

    /// Replaces the definition text (the editor's save): validated as a whole. `base` is the
    /// version the edit started from: when a newer version was saved meanwhile (by the app or
    /// the CLI), the save is refused with what changed since, instead of silently undoing it.
    /// `None` saves on top of whatever is newest (`def set-file` without `--base`).
    pub fn def_set_text(
        &self,
        name: &str,
        text: &str,
        base: Option<u32>,
    ) -> Result<DefinitionVersion, OpError> {
        let outcome = self.def_save_on(name, text, base);
        self.audit("definition.edit", &format!("definition/{name}"), &outcome);
        outcome
    }

    /// [`Engine::def_set_text`] with the content of `file`, read as [`read_definition_file`]
    /// does (never a FIFO or device, at most 1 MiB).
    pub fn def_set_file(
        &self,
        name: &str,
        file: &Path,
        base: Option<u32>,
    ) -> Result<DefinitionVersion, OpError> {
        let outcome =
            read_definition_file(file).and_then(|text| self.def_save_on(name, &text, base));
        self.audit("definition.edit", &format!("definition/{name}"), &outcome);
        outcome
    }

    fn def_save_on(
        &self,
        name: &str,
        text: &str,
        base: Option<u32>,
    ) -> Result<DefinitionVersion, OpError> {
        let name = Self::definition_name(name)?;
        let newest = self.definition_version(&name, None)?;
        let started = match base {
            Some(b) => self.definition_version(&name, Some(b))?,
            None => newest.clone(),
        };
        // A newer version with the same content as the edit's start loses nothing.
        if started.hash != newest.hash {
            return Err(self.stale(&name, started.version, newest.version));
        }
        let saved = self.def_commit(
            &name,
            Some(&newest),
            text,
            &[],
            "definition edited",
            &quiet(),
        );
        match saved {
            // Another save won between the check above and the insert.
            Err(OpError::Inventory(InventoryError::Stale { newest: now, .. })) => {
                Err(self.stale(&name, started.version, now))
            }
            other => other,
        }
    }

    /// The refusal of a save that started from `base` while `newest` is newer: with the
    /// changes between the two (the same lines as `def diff`).
    fn stale(&self, name: &str, base: u32, newest: u32) -> OpError {
        let changes = self
            .def_diff(name, base, newest)
            .unwrap_or_else(|e| vec![format!("(the changes cannot be shown: {e})")]);
        OpError::Stale {
            name: name.to_owned(),
            base,
            newest,
            changes,
        }
    }

    pub fn def_add_packages(
        &self,
        name: &str,
        files: &[PathBuf],
        progress: ProgressFn,
    ) -> Result<DefinitionVersion, OpError> {
        let outcome = (|| {
            let name = Self::definition_name(name)?;
            let base = self.definition_version(&name, None)?;
            let current = self.def_show(&name, None)?;
            let mut new_files = Vec::new();
            for f in files {
                let file = check_package_source(f)?;
                let taken = current
                    .packages
                    .iter()
                    .map(|p| &p.file)
                    .chain(new_files.iter().map(|n: &NewFile| &n.file))
                    .find(|n| package_names_collide(n, &file));
                match taken {
                    Some(same) if *same == file => {
                        return Err(ValidationError::new(
                            "packages",
                            format!("{file} is already a package; remove it first to replace it"),
                        )
                        .into())
                    }
                    Some(other) => {
                        return Err(ValidationError::new(
                            "packages",
                            format!(
                                "{file} is the same file as the package {other} on the payload \
                                 disk, whose names ignore case (in Unicode: ß is SS, ς is Σ); \
                                 rename it, or remove {other} first"
                            ),
                        )
                        .into())
                    }
                    None => {}
                }
                new_files.push(NewFile {
                    src: f.clone(),
                    file,
                    expected: None,
                });
            }
            if new_files.is_empty() {
                return Err(ValidationError::new("packages", "no files given").into());
            }
            let names: Vec<&str> = new_files.iter().map(|n| n.file.as_str()).collect();
            self.def_commit(
                &name,
                Some(&base),
                &current.text,
                &new_files,
                &format!("added {}", names.join(", ")),
                &progress,
            )
        })();
        self.audit(
            "definition.add-package",
            &format!("definition/{name}"),
            &outcome,
        );
        outcome
    }

    pub fn def_remove_package(&self, name: &str, file: &str) -> Result<DefinitionVersion, OpError> {
        let outcome = (|| {
            let name = Self::definition_name(name)?;
            let base = self.definition_version(&name, None)?;
            let current = self.def_show(&name, None)?;
            if !current.packages.iter().any(|p| p.file == file) {
                return Err(InventoryError::NotFound {
                    kind: "package",
                    name: file.to_owned(),
                }
                .into());
            }
            let text = with_package_removed(&current.text, file)?;
            self.def_commit(
                &name,
                Some(&base),
                &text,
                &[],
                &format!("removed {file}"),
                &quiet(),
            )
        })();
        self.audit(
            "definition.remove-package",
            &format!("definition/{name}"),
            &outcome,
        );
        outcome
    }

    /// Takes in an existing directory (definition.toml + packages/), checked as a whole before
    /// anything is recorded: definition.toml a regular file within its size limit (never a
    /// FIFO or device: nothing blocks), every listed package present as a regular file whose
    /// content matches the sha256 and size written for it, nothing unlisted.
    pub fn def_import(
        &self,
        name: &str,
        dir: &Path,
        progress: ProgressFn,
    ) -> Result<DefinitionVersion, OpError> {
        let outcome = (|| {
            let name = Self::definition_name(name)?;
            let file = dir.join(definition::FILE_NAME);
            let text = read_definition_file(&file)?;
            let label = file.display().to_string();
            let def = definition::parse_definition(&label, &text).map_err(invalid)?;
            let listed = packages_of(&def);
            let pkg_dir = dir.join("packages");
            let present = package_dir_entries(&pkg_dir)?;
            if let Some(extra) = present
                .iter()
                .find(|f| !listed.iter().any(|p| &p.file == *f))
            {
                return Err(ValidationError::new(
                    "packages",
                    format!("packages/{extra} is not listed in definition.toml"),
                )
                .into());
            }
            // Strip the package list, then add the files back so their sha256 and size are
            // measured; each must match what the text says before the version is recorded.
            let mut doc: toml_edit::DocumentMut =
                text.parse().map_err(|e: toml_edit::TomlError| {
                    ValidationError::new("definition", e.to_string())
                })?;
            doc.remove("packages");
            let mut files = Vec::new();
            for p in &listed {
                let src = pkg_dir.join(&p.file);
                check_package_source(&src)?;
                files.push(NewFile {
                    src,
                    file: p.file.clone(),
                    expected: Some((p.sha256.clone(), p.size)),
                });
            }
            let base = self.definition_version(&name, None).ok();
            self.def_commit(
                &name,
                base.as_ref(),
                &doc.to_string(),
                &files,
                &format!("imported from {}", dir.display()),
                &progress,
            )
        })();
        self.audit("definition.import", &format!("definition/{name}"), &outcome);
        outcome
    }

    /// Field changes and package changes between two versions, one line each.
    pub fn def_diff(&self, name: &str, from: u32, to: u32) -> Result<Vec<String>, OpError> {
        let a = self.def_show(name, Some(from))?;
        let b = self.def_show(name, Some(to))?;
        let flat = |text: &str| -> Result<BTreeMap<String, String>, OpError> {
            let mut v: toml::Value = toml::from_str(text)
                .map_err(|e| ValidationError::new("definition", e.to_string()))?;
            if let Some(t) = v.as_table_mut() {
                t.remove("packages");
            }
            let mut out = BTreeMap::new();
            flatten_value("", &v, &mut out);
            Ok(out)
        };
        let (fa, fb) = (flat(&a.text)?, flat(&b.text)?);
        let mut lines = Vec::new();
        for (k, va) in &fa {
            match fb.get(k) {
                None => lines.push(format!("- {k} = {va}")),
                Some(vb) if vb != va => lines.push(format!("~ {k}: {va} → {vb}")),
                _ => {}
            }
        }
        for (k, vb) in &fb {
            if !fa.contains_key(k) {
                lines.push(format!("+ {k} = {vb}"));
            }
        }
        for p in &a.packages {
            match b.packages.iter().find(|q| q.file == p.file) {
                None => lines.push(format!("- package {} ({} bytes)", p.file, p.size)),
                Some(q) if q.sha256 != p.sha256 => lines.push(format!(
                    "~ package {}: content changed ({} → {} bytes)",
                    p.file, p.size, q.size
                )),
                _ => {}
            }
        }
        for q in &b.packages {
            if !a.packages.iter().any(|p| p.file == q.file) {
                lines.push(format!("+ package {} ({} bytes)", q.file, q.size));
            }
        }
        Ok(lines)
    }

    /// Writes a version as a .tar.gz (definition.toml and packages/).
    pub fn def_export(&self, name: &str, version: u32, out: &Path) -> Result<(), OpError> {
        let n = Self::definition_name(name)?;
        let v = self.definition_version(&n, Some(version))?;
        let dir = self.definition_dir(&n, &v.hash);
        let partial = out.with_extension("partial");
        let result = (|| {
            let file = std::fs::File::create(&partial).map_err(write_err(&partial))?;
            let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
            let mut tar = tar::Builder::new(gz);
            tar.mode(tar::HeaderMode::Deterministic);
            tar.append_dir_all(".", &dir).map_err(write_err(out))?;
            tar.into_inner()
                .and_then(|gz| gz.finish())
                .map_err(write_err(out))?;
            std::fs::rename(&partial, out).map_err(write_err(out))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        result
    }

    /// Writes the app payload disk of a version (deterministic FAT image) to `out`.
    pub fn def_payload(&self, name: &str, version: u32, out: &Path) -> Result<String, OpError> {
        let n = Self::definition_name(name)?;
        let v = self.definition_version(&n, Some(version))?;
        let dir = self.definition_dir(&n, &v.hash);
        let view = self.def_show(&n, Some(version))?;
        let def =
            definition::parse_definition(definition::FILE_NAME, &view.text).map_err(invalid)?;
        use crate::guest::{hook_script, PayloadSource};
        let env: Vec<(String, String)> = def
            .env
            .iter()
            .map(|(k, v)| (k.get_ref().clone(), v.get_ref().clone()))
            .collect();
        let mut files: Vec<(String, PayloadSource)> = vec![(
            definition::FILE_NAME.into(),
            PayloadSource::File(dir.join(definition::FILE_NAME)),
        )];
        for (hook, text) in [
            ("install", &def.hooks.install),
            ("start", &def.hooks.start),
            ("stop", &def.hooks.stop),
        ] {
            files.push((
                format!("flotilla/hooks/{hook}"),
                PayloadSource::Bytes(hook_script(text.get_ref(), &env).into_bytes()),
            ));
        }
        // A version recorded before the names were checked as the disk stores them.
        let names: Vec<&str> = view.packages.iter().map(|p| p.file.as_str()).collect();
        if let Some(problem) = crate::guest::package_names_problem(&names) {
            return Err(ValidationError::new(
                "payload",
                format!("{n} v{version}: {problem}; save a version with the package renamed"),
            )
            .into());
        }
        for p in &view.packages {
            files.push((
                format!("packages/{}", p.file),
                PayloadSource::File(dir.join("packages").join(&p.file)),
            ));
        }
        crate::guest::write_payload_disk(&files, &v.hash, out)
            .map_err(|e| OpError::Invalid(ValidationError::new("payload", e.to_string())))?;
        Ok(library::sha256_file(out, &|_, _| {})?)
    }
}

fn flatten_value(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten_value(&key, v, out);
            }
        }
        toml::Value::Array(items) if items.iter().all(|i| i.is_table()) => {
            for (i, item) in items.iter().enumerate() {
                flatten_value(&format!("{prefix}[{i}]"), item, out);
            }
        }
        other => {
            out.insert(prefix.to_owned(), other.to_string());
        }
    }
}

/// The names in an imported `packages/` directory: none when it does not exist; refused when
/// it is a symbolic link or not a directory.
fn package_dir_entries(dir: &Path) -> Result<Vec<String>, OpError> {
    let bad = |reason: String| {
        OpError::Library(LibraryError::NotAnImage {
            path: dir.to_owned(),
            reason,
        })
    };
    let unreadable = |source| {
        OpError::Library(LibraryError::Unreadable {
            path: dir.to_owned(),
            source,
        })
    };
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(unreadable(e)),
        Ok(m) if !m.is_dir() => {
            return Err(bad(file_type_problem(m.file_type())
                .unwrap_or("is a file; packages/ must be a directory")
                .into()))
        }
        Ok(_) => {}
    }
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    Ok(names)
}

fn quiet() -> ProgressFn {
    std::sync::Arc::new(|_| {})
}

fn make_read_only(dir: &Path) -> Result<(), OpError> {
    use std::os::unix::fs::PermissionsExt;
    for entry in walk(dir) {
        if entry.is_file() {
            std::fs::set_permissions(
                &entry,
                std::fs::Permissions::from_mode(crate::files::READ_ONLY_MODE),
            )
            .map_err(write_err(&entry))?;
        }
    }
    Ok(())
}

fn make_writable_and_remove(dir: &Path) -> std::io::Result<()> {
    std::fs::remove_dir_all(dir)
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
