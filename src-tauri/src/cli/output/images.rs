//! Image versions, their copies on hosts, and builders.

use super::{bytes, print_json, table};
use crate::model::{BootMode, Builder, ImageVersion};
use crate::ops::images::EnsureOutcome;

fn boot_text(b: &BootMode) -> String {
    match b {
        BootMode::Disk { firmware } => format!("from its disk ({firmware:?})").to_lowercase(),
        BootMode::Kernel { cmdline, .. } => format!("direct kernel boot ({cmdline})"),
    }
}

pub fn image_list(json: bool, versions: &[ImageVersion]) {
    if json {
        return print_json(versions);
    }
    if versions.is_empty() {
        say!("No images. Import one with: flotillactl image import NAME FILE");
        return;
    }
    let rows: Vec<Vec<String>> = versions
        .iter()
        .map(|v| {
            vec![
                format!("{}:v{}", v.image, v.version),
                bytes(v.virtual_size),
                bytes(v.actual_size),
                v.sha256[..12].to_string(),
                v.copies
                    .iter()
                    .map(|c| c.host.to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                v.created_at.clone(),
                v.origin.clone(),
            ]
        })
        .collect();
    table(
        &[
            "VERSION", "SIZE", "ON DISK", "SHA256", "ON HOSTS", "CREATED", "ORIGIN",
        ],
        &rows,
    );
}

pub fn image_show(json: bool, v: &ImageVersion) {
    if json {
        return print_json(v);
    }
    let lines = [
        ("Image", format!("{}:v{}", v.image, v.version)),
        (
            "Made from",
            v.parent.map_or("-".into(), |p| format!("v{p}")),
        ),
        ("Origin", v.origin.clone()),
        ("Boots", boot_text(&v.boot)),
        (
            "Size",
            format!(
                "{} virtual, {} on disk",
                bytes(v.virtual_size),
                bytes(v.actual_size)
            ),
        ),
        ("sha256", v.sha256.clone()),
        ("File", v.file.clone()),
        (
            "Sealed",
            if v.seal.is_empty() {
                "no".into()
            } else {
                v.seal.join(", ")
            },
        ),
        (
            "On hosts",
            if v.copies.is_empty() {
                "none".into()
            } else {
                v.copies
                    .iter()
                    .map(|c| c.host.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        ),
        ("Created", v.created_at.clone()),
        ("Notes", v.notes.clone()),
    ];
    for (k, val) in lines {
        say!("{:<10} {val}", format!("{k}:"));
    }
}

pub fn ensured(json: bool, e: &EnsureOutcome) {
    if json {
        return print_json(e);
    }
    if e.bytes_copied == 0 {
        say!(
            "{}:v{} is already on {} ({}); nothing copied.",
            e.image,
            e.version,
            e.host,
            e.path
        );
    } else {
        say!(
            "Copied {}:v{} to {} ({}, {}), verified by sha256.",
            e.image,
            e.version,
            e.host,
            e.path,
            bytes(e.bytes_copied)
        );
    }
}

pub fn builder(json: bool, b: &Builder, console: Option<&str>, uri: &str) {
    if json {
        return print_json(&serde_json::json!({ "builder": b, "console": console }));
    }
    say!(
        "Builder {} for image {} runs on host {}.",
        b.domain,
        b.image,
        b.host
    );
    match console {
        Some(vnc) if uri.contains("+ssh://") => say!(
            "Console:  VNC {vnc} on {}, through SSH: flotillactl image console {}   (or: virt-viewer -c '{uri}' {})",
            b.host,
            b.image,
            b.domain
        ),
        Some(vnc) => say!(
            "Console:  VNC {vnc} on {}; open it with: virt-viewer -c '{uri}' {}",
            b.host,
            b.domain
        ),
        None => say!("Console:  virt-viewer -c '{uri}' {}", b.domain),
    }
    say!("Serial:   {} (on {})", b.serial_log, b.host);
    say!(
        "When done: flotillactl image capture {}   (or: image builder-abort {})",
        b.image,
        b.image
    );
}

pub fn builder_list(json: bool, list: &[Builder]) {
    if json {
        return print_json(list);
    }
    if list.is_empty() {
        say!("No builders. Start one with: flotillactl image build NAME --host H --from IMAGE");
        return;
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|b| {
            vec![
                b.image.to_string(),
                b.host.to_string(),
                b.state.clone(),
                b.base.clone().or_else(|| b.iso.clone()).unwrap_or_default(),
                b.domain.clone(),
                b.created_at.clone(),
            ]
        })
        .collect();
    table(
        &["IMAGE", "HOST", "STATE", "FROM", "DOMAIN", "STARTED"],
        &rows,
    );
}
