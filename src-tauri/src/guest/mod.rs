//! What a guest reads, written in pure Rust: the cloud-init NoCloud seed disk (this module) and,
//! with the definitions issue, the app payload disk. The contract is docs/guest-contract.md.

mod payload;
mod seed;

pub use payload::{
    hook_script, payload_runcmd, write_payload_disk, PayloadError, PayloadSource, PAYLOAD_LABEL,
    PAYLOAD_MOUNT,
};
pub use seed::{write_seed_disk, NicConfig, SeedError, SeedSpec, SEED_LABEL};
