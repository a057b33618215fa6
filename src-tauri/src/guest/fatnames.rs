//! Whether package names come through the payload disk as themselves. The payload is a FAT
//! image written by `fatfs`; FAT keeps a long name (UCS-2) and an 8.3 short alias per file,
//! and both the writer and a guest's kernel find a file by either. So names can be lost in
//! ways a name-by-name check does not see:
//!
//! - `fatfs` compares long names by their full Unicode upper case (`ß.txt` is `SS.TXT`,
//!   `ς` and `σ` are both `Σ`): creating the second opens the first, whose content is then
//!   replaced — one file where the definition lists two;
//! - a name that reads as the 8.3 alias FAT gave an earlier file (`LONGFI~1.TXT` after
//!   `longfilename.txt`) is taken for that file the same way;
//! - Linux (vfat, as the Debian guests mount it: `utf8`, case folding of ASCII only) opens
//!   the first entry whose long *or* short name matches.
//!
//! Rather than re-implement FAT's rules, the check writes the names — in the order the
//! payload writes them — into a FAT image of its own with the same `fatfs`, and reads the
//! directory back.

use std::io::{Seek, SeekFrom};

/// The names of one directory as FAT stores them: (long name, 8.3 short name).
fn entries<T: fatfs::ReadWriteSeek>(
    dir: &fatfs::Dir<'_, T>,
) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for e in dir.iter() {
        let e = e.map_err(|e| e.to_string())?;
        let long = e.file_name();
        if long != "." && long != ".." {
            out.push((long, e.short_file_name()));
        }
    }
    Ok(out)
}

/// How `fatfs` compares long names: full Unicode upper case, character by character.
fn fat_upper(name: &str) -> String {
    name.chars().flat_map(char::to_uppercase).collect()
}

/// Why the package `names` (in the order the payload disk is written) cannot all be stored
/// in its `packages/` folder as themselves — naming the file and the reason — or `None`.
pub fn package_names_problem(names: &[&str]) -> Option<String> {
    match check(names) {
        Ok(found) => found,
        Err(e) => Some(format!(
            "the package names could not be checked against the payload disk's rules: {e}"
        )),
    }
}

fn check(names: &[&str]) -> Result<Option<String>, String> {
    let io = |e: std::io::Error| e.to_string();
    // A scratch FAT in memory with room for every name's directory entries (a long name takes
    // at most 21 entries of 32 bytes); no file content is written.
    let size = (8usize << 20) + names.len().saturating_mul(1024);
    let mut disk = std::io::Cursor::new(vec![0u8; size]);
    fatfs::format_volume(&mut disk, fatfs::FormatVolumeOptions::new()).map_err(io)?;
    disk.seek(SeekFrom::Start(0)).map_err(io)?;
    let fs = fatfs::FileSystem::new(&mut disk, fatfs::FsOptions::new()).map_err(io)?;
    let dir = fs.root_dir().create_dir("packages").map_err(io)?;
    for &name in names {
        if let Err(e) = dir.create_file(name) {
            return Ok(Some(format!(
                "packages/{name}: the payload disk (FAT) cannot hold this name ({e})"
            )));
        }
    }
    let all = entries(&dir)?;
    let longs: std::collections::HashSet<&str> = all.iter().map(|(l, _)| l.as_str()).collect();
    // A name that is not a file of its own: fatfs opened an existing file instead of making a
    // new one (or stored it otherwise).
    for (i, &name) in names.iter().enumerate() {
        if longs.contains(name) {
            continue;
        }
        if let Some(first) = names[..i].iter().find(|m| fat_upper(m) == fat_upper(name)) {
            return Ok(Some(format!(
                "packages/{name} is the same file as packages/{first} on the payload disk: \
                 FAT compares names ignoring case, in Unicode (ß is SS, ς is Σ, ǅ is Ǆ); \
                 rename one of them"
            )));
        }
        let alias = all
            .iter()
            .find(|(_, short)| short.eq_ignore_ascii_case(name));
        return Ok(Some(match alias {
            Some((long, short)) => format!(
                "packages/{name} is the 8.3 short name FAT gave packages/{long} ({short}): \
                 FAT finds a file by either name, so the two would be one file; rename \
                 packages/{name} (a name of the form NAME~N.EXT is best avoided)"
            ),
            None => format!(
                "packages/{name} would not be a file of its own on the payload disk (FAT); \
                 rename it"
            ),
        }));
    }
    if all.len() != names.len() {
        return Ok(Some(format!(
            "the payload disk (FAT) would hold {} files for {} packages; rename the packages \
             whose names differ only in case",
            all.len(),
            names.len()
        )));
    }
    // A guest opens the first entry whose long or short name matches (ignoring ASCII case).
    for (long, _) in &all {
        if let Some((other, short)) = all
            .iter()
            .find(|(other, short)| other != long && short.eq_ignore_ascii_case(long))
        {
            return Ok(Some(format!(
                "packages/{long} reads as the 8.3 short name of packages/{other} ({short}) on \
                 the payload disk: a guest could open the other file; rename packages/{long}"
            )));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::{write_payload_disk, PayloadSource};
    use std::io::Read;

    /// What the payload disk holds in `packages/` after writing `names` (each file's content is
    /// its own name): (name, content) as read back with fatfs.
    fn written(names: &[&str]) -> Vec<(String, String)> {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("p.img");
        let files: Vec<(String, PayloadSource)> = names
            .iter()
            .map(|n| {
                (
                    format!("packages/{n}"),
                    PayloadSource::Bytes(n.as_bytes().to_vec()),
                )
            })
            .collect();
        write_payload_disk(&files, "00000000", &img).unwrap();
        let mut f = std::fs::File::open(&img).unwrap();
        let fs = fatfs::FileSystem::new(&mut f, fatfs::FsOptions::new()).unwrap();
        let pk = fs.root_dir().open_dir("packages").unwrap();
        let mut out = Vec::new();
        for e in pk.iter() {
            let e = e.unwrap();
            if e.file_name().starts_with('.') {
                continue;
            }
            let mut text = String::new();
            e.to_file().read_to_string(&mut text).unwrap();
            out.push((e.file_name(), text));
        }
        out
    }

    /// Why the check exists: the payload writer itself turns these pairs into one file with
    /// the second file's content, silently.
    #[test]
    fn the_payload_writer_merges_names_fat_takes_for_one() {
        for pair in [
            ["ß.txt", "SS.txt"],
            ["σ.conf", "ς.conf"],
            ["longfilename.txt", "LONGFI~1.TXT"],
        ] {
            let got = written(&pair);
            assert_eq!(got.len(), 1, "{pair:?}: {got:?}");
            assert_eq!(got[0], (pair[0].to_owned(), pair[1].to_owned()), "{pair:?}");
            assert!(package_names_problem(&pair).is_some(), "{pair:?}");
        }
    }

    #[test]
    fn names_fat_takes_for_one_file_are_refused_with_the_reason() {
        for (names, words) in [
            (&["ß.txt", "SS.txt"][..], "same file as packages/ß.txt"),
            (&["SS.txt", "ß.txt"], "same file as packages/SS.txt"),
            (&["σ.conf", "ς.conf"], "ignoring case"),
            (&["ǅ.txt", "ǆ.txt"], "ignoring case"),
            (&["App.tar.gz", "app.tar.gz"], "ignoring case"),
            (&["longfilename.txt", "LONGFI~1.TXT"], "LONGFI~1.TXT"),
            (&["longfilename.txt", "longfi~1.txt"], "8.3 short name"),
            (
                &["application-server.tar.gz", "APPLIC~1.GZ"],
                "8.3 short name",
            ),
            (&["a😀.txt"], "cannot hold"),
        ] {
            let p = package_names_problem(names).unwrap_or_default();
            assert!(p.contains(words), "{names:?}: {p}");
        }
    }

    /// The check writes every name into a FAT directory, as the payload writer does; fatfs
    /// scans the folder for each file and again for each 8.3 alias taken (names alike take
    /// many: 500 such names took 9 s, 1,000 over 6 minutes). A definition holds at most
    /// `MAX_PACKAGES`; that many names alike stay quick.
    #[test]
    fn the_most_packages_a_definition_holds_are_checked_quickly() {
        let names: Vec<String> = (0..crate::model::definition::MAX_PACKAGES)
            .map(|i| format!("package-number-{i}-of-a-large-application.tar.gz"))
            .collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let began = std::time::Instant::now();
        assert_eq!(package_names_problem(&refs), None);
        let took = began.elapsed();
        eprintln!("{} names: {took:?}", names.len());
    }

    #[test]
    fn odd_names_fat_can_hold_come_back_as_themselves() {
        let long = format!("{}.bin", "x".repeat(200));
        let mut names: Vec<String> = [
            "é ü.txt",
            "e\u{301} ü.txt",
            "Ǆ.txt",
            "a b [c] {d} #e% & '+,;=@^_`~!.tar.gz",
            "長い名前のパッケージ.tar.gz",
            "LONGFI~1.TXT",
            "longfilename.txt",
            "README",
            "readme.md",
            "x.y.z",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        names.push(long);
        names.extend((1..=12).map(|i| format!("application-{i}.tar.gz")));
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(package_names_problem(&refs), None);
        let mut got = written(&refs);
        got.sort();
        let mut want: Vec<(String, String)> =
            names.iter().map(|n| (n.clone(), n.clone())).collect();
        want.sort();
        assert_eq!(got, want);
    }
}
