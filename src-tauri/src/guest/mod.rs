//! What a guest reads, written in pure Rust: the cloud-init NoCloud seed disk (this module) and,
//! with the definitions issue, the app payload disk. The contract is docs/guest-contract.md.

mod fatnames;
mod isolation;
mod payload;
mod seed;

pub use fatnames::package_names_problem;
pub use isolation::{isolation_runcmd, Isolation};
pub use payload::{
    hook_script, live_install_script, live_start_script, live_stop_script, payload_runcmd,
    write_payload_disk, PayloadError, PayloadSource, PAYLOAD_LABEL, PAYLOAD_MOUNT,
    PAYLOAD_MOUNT_OPTIONS,
};
pub use seed::{write_seed_disk, NicConfig, SeedError, SeedSpec, SEED_LABEL};

/// Creates `out` (replacing it) as a FAT image of `size` bytes with `label` and `volume_id`,
/// rewound and ready for `fatfs::FileSystem::new`. Timestamps are fixed (fatfs without chrono),
/// so the same content gives the same bytes.
fn new_fat_image(
    out: &std::path::Path,
    size: u64,
    label: &str,
    volume_id: u32,
) -> std::io::Result<std::fs::File> {
    use std::io::{Seek, SeekFrom};
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(out)?;
    file.set_len(size)?;
    let mut padded = [b' '; 11];
    let n = label.len().min(11);
    padded[..n].copy_from_slice(&label.as_bytes()[..n]);
    fatfs::format_volume(
        &mut file,
        fatfs::FormatVolumeOptions::new()
            .volume_label(padded)
            .volume_id(volume_id),
    )?;
    file.seek(SeekFrom::Start(0))?;
    Ok(file)
}
