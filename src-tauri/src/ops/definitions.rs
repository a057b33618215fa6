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
use crate::model::definition::{self, package_name_problem, Definition, DefinitionError};
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

/// Checks a file offered as a package: a readable regular file (not a directory, not a
/// symbolic link) whose name is a valid package name.
fn check_package_source(path: &Path) -> Result<String, OpError> {
    let bad = |reason: String| {
        OpError::Library(LibraryError::NotAnImage {
            path: path.to_owned(),
            reason,
        })
    };
    let meta = std::fs::symlink_metadata(path).map_err(|source| {
        OpError::Library(LibraryError::Unreadable {
            path: path.to_owned(),
            source,
        })
    })?;
    if meta.file_type().is_symlink() {
        return Err(bad("is a symbolic link; add the file it points to".into()));
    }
    if meta.is_dir() {
        return Err(bad(
            "is a directory; add the files in it (or pack it as an archive)".into(),
        ));
    }
    if !meta.is_file() {
        return Err(bad("is not a regular file".into()));
    }
    std::fs::File::open(path).map_err(|source| {
        OpError::Library(LibraryError::Unreadable {
            path: path.to_owned(),
            source,
        })
    })?;
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

/// Copies `src` to `dest` streamed, returning (sha256, size).
fn copy_hashed(src: &Path, dest: &Path, progress: &ProgressFn) -> Result<(String, u64), OpError> {
    let unreadable = |source| {
        OpError::Library(LibraryError::Unreadable {
            path: src.to_owned(),
            source,
        })
    };
    let mut input = std::fs::File::open(src).map_err(unreadable)?;
    let total = input.metadata().map_err(unreadable)?.len();
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
        new_files: &[(PathBuf, String)],
        change: &str,
        progress: &ProgressFn,
    ) -> Result<DefinitionVersion, OpError> {
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
            for (src, file) in new_files {
                let (sha256, size) = copy_hashed(src, &pkgs.join(file), progress)?;
                added.push(PackageView {
                    file: file.clone(),
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
            Ok(self
                .inventory
                .definition_version_insert(name, &hash, change)?)
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

    /// Replaces the definition text (the editor's save): validated as a whole.
    pub fn def_set_text(&self, name: &str, text: &str) -> Result<DefinitionVersion, OpError> {
        let outcome = (|| {
            let name = Self::definition_name(name)?;
            let base = self.definition_version(&name, None)?;
            self.def_commit(&name, Some(&base), text, &[], "definition edited", &quiet())
        })();
        self.audit("definition.edit", &format!("definition/{name}"), &outcome);
        outcome
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
                if current.packages.iter().any(|p| p.file == file)
                    || new_files.iter().any(|(_, n)| n == &file)
                {
                    return Err(ValidationError::new(
                        "packages",
                        format!("{file} is already a package; remove it first to replace it"),
                    )
                    .into());
                }
                new_files.push((f.clone(), file));
            }
            if new_files.is_empty() {
                return Err(ValidationError::new("packages", "no files given").into());
            }
            let names: Vec<&str> = new_files.iter().map(|(_, n)| n.as_str()).collect();
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

    /// Takes in an existing directory (definition.toml + packages/), validated as a whole:
    /// every listed package present with its sha256 and size, nothing unlisted.
    pub fn def_import(
        &self,
        name: &str,
        dir: &Path,
        progress: ProgressFn,
    ) -> Result<DefinitionVersion, OpError> {
        let outcome = (|| {
            let name = Self::definition_name(name)?;
            let file = dir.join(definition::FILE_NAME);
            let text = std::fs::read_to_string(&file).map_err(|source| {
                OpError::Library(LibraryError::Unreadable {
                    path: file.clone(),
                    source,
                })
            })?;
            let label = file.display().to_string();
            let def = definition::parse_definition(&label, &text).map_err(invalid)?;
            let listed = packages_of(&def);
            let pkg_dir = dir.join("packages");
            let present: Vec<String> = match std::fs::read_dir(&pkg_dir) {
                Ok(entries) => entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect(),
                Err(_) => Vec::new(),
            };
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
            let base = self.definition_version(&name, None).ok();
            let staged = (|| {
                // Strip the package list, then add the files back so their sha256 and size are
                // measured, not trusted.
                let mut doc: toml_edit::DocumentMut =
                    text.parse().map_err(|e: toml_edit::TomlError| {
                        ValidationError::new("definition", e.to_string())
                    })?;
                doc.remove("packages");
                let mut files = Vec::new();
                for p in &listed {
                    let src = pkg_dir.join(&p.file);
                    check_package_source(&src)?;
                    files.push((src, p.file.clone()));
                }
                Ok::<_, OpError>((doc.to_string(), files))
            })()?;
            let v = self.def_commit(
                &name,
                base.as_ref(),
                &staged.0,
                &staged.1,
                &format!("imported from {}", dir.display()),
                &progress,
            )?;
            let got = self.def_show(&name, Some(v.version))?;
            for p in &listed {
                let actual = got.packages.iter().find(|g| g.file == p.file);
                if actual.is_some_and(|a| a.sha256 != p.sha256 || a.size != p.size) {
                    return Err(ValidationError::new(
                        "packages",
                        format!(
                            "packages/{}: sha256 or size differs from definition.toml",
                            p.file
                        ),
                    )
                    .into());
                }
            }
            Ok(v)
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
