//! Files only their owner may read: the data directory (the inventory holds load-balancer
//! credentials), the image library and definitions, and temporary files (edit buffers, seed
//! disks and payload images with per-server configuration). Each is created with its final
//! mode, never made private after a window in which another user could open it.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of every directory Flotilla makes.
pub const DIR_MODE: u32 = 0o700;
/// Mode of a file while it is written (the inventory keeps it).
pub const FILE_MODE: u32 = 0o600;
/// Mode of a finished library or definition file: read-only, the owner's.
pub const READ_ONLY_MODE: u32 = 0o400;

/// Creates `path` and any missing parents as private directories (0700). Directories that
/// exist are left as they are.
pub fn private_dir_all(path: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
}

/// Creates `path` as a new private file (0600), replacing a file of that name (which may
/// have had another mode: it is removed, not reused).
pub fn private_file(path: &Path) -> io::Result<File> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
}

/// A new private temporary directory (0700, a random name under the system's temporary
/// directory), removed with what it holds when dropped.
pub fn private_temp_dir(prefix: &str) -> io::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .permissions(std::fs::Permissions::from_mode(DIR_MODE))
        .tempdir()
}

/// Takes group and other access away from `path` if it has any (a data directory or
/// inventory made by an older Flotilla). Returns whether it changed anything.
pub fn make_private(path: &Path) -> io::Result<bool> {
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 == 0 {
        return Ok(false);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o700))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn directories_files_and_temporary_directories_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b/c");
        private_dir_all(&nested).unwrap();
        for p in ["a", "a/b", "a/b/c"] {
            assert_eq!(mode(&dir.path().join(p)), 0o700, "{p}");
        }
        let f = nested.join("f");
        std::fs::write(&f, "old").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        private_file(&f).unwrap();
        assert_eq!(mode(&f), 0o600);
        assert_eq!(std::fs::read(&f).unwrap(), b"");

        let t1 = private_temp_dir("flotilla-test-").unwrap();
        let t2 = private_temp_dir("flotilla-test-").unwrap();
        assert_eq!(mode(t1.path()), 0o700);
        assert_ne!(t1.path(), t2.path(), "names are not predictable");
        let kept = t1.path().to_owned();
        drop(t1);
        assert!(!kept.exists());

        std::fs::set_permissions(&nested, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(make_private(&nested).unwrap());
        assert_eq!(mode(&nested), 0o700);
        assert!(!make_private(&nested).unwrap());
    }
}
