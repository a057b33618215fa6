//! The app payload disk: a version of a definition directory as a read-only FAT image labelled
//! `FLOTILLAAPP`, mounted by the guest at /run/flotilla/app (docs/guest-contract.md). Same
//! content → identical bytes (fixed timestamps, volume id from the content hash, files in the
//! given order), so hosts can cache it by checksum. Files are streamed, never held in memory.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub const PAYLOAD_LABEL: &str = "FLOTILLAAPP";
/// FAT32's limit for one file.
const MAX_FILE: u64 = (4 << 30) - 1;

#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("{0}")]
    Invalid(String),
    #[error("cannot write the payload disk {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Writes `files` (path inside the image, source file) into a FAT image at `out`.
pub fn write_payload_disk(
    files: &[(String, PathBuf)],
    content_hash: &str,
    out: &Path,
) -> Result<(), PayloadError> {
    let io = |source| PayloadError::Io {
        path: out.display().to_string(),
        source,
    };
    let mut total = 0u64;
    for (name, src) in files {
        let len = std::fs::metadata(src).map_err(io)?.len();
        if len > MAX_FILE {
            return Err(PayloadError::Invalid(format!(
                "{name} is {len} bytes; a payload file can be at most 4 GiB"
            )));
        }
        total += len.div_ceil(4096) * 4096 + 4096;
    }
    // Room for the FATs and directories; at least 8 MiB so small payloads get a normal FAT.
    let size = (total + total / 16 + (8 << 20)).div_ceil(1 << 20) << 20;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(out)
        .map_err(io)?;
    file.set_len(size).map_err(io)?;
    let mut label = [b' '; 11];
    label[..PAYLOAD_LABEL.len()].copy_from_slice(PAYLOAD_LABEL.as_bytes());
    let volume_id = u32::from_str_radix(content_hash.get(..8).unwrap_or("0"), 16).unwrap_or(0);
    fatfs::format_volume(
        &mut file,
        fatfs::FormatVolumeOptions::new()
            .volume_label(label)
            .volume_id(volume_id),
    )
    .map_err(io)?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    {
        let fs = fatfs::FileSystem::new(&mut file, fatfs::FsOptions::new()).map_err(io)?;
        let mut buf = vec![0u8; 1 << 20];
        for (name, src) in files {
            let root = fs.root_dir();
            let (dir, base) = match name.rsplit_once('/') {
                Some((d, b)) => {
                    let mut dir = root.clone();
                    for part in d.split('/') {
                        dir = match dir.open_dir(part) {
                            Ok(existing) => existing,
                            Err(_) => dir.create_dir(part).map_err(io)?,
                        };
                    }
                    (dir, b)
                }
                None => (root, name.as_str()),
            };
            let mut dest = dir.create_file(base).map_err(io)?;
            dest.truncate().map_err(io)?;
            let mut input = std::fs::File::open(src).map_err(io)?;
            loop {
                let n = input.read(&mut buf).map_err(io)?;
                if n == 0 {
                    break;
                }
                dest.write_all(&buf[..n]).map_err(io)?;
            }
        }
        fs.unmount().map_err(io)?;
    }
    file.sync_all().map_err(io)
}
