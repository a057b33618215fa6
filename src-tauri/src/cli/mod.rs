//! `flotillactl` — placeholder while the engine compiles.
pub fn main() -> std::process::ExitCode {
    std::process::ExitCode::SUCCESS
}
