//! Reads what a file says it is — and, for qcow2, which other files it names — in Rust, before
//! any qemu-img call: `qemu-img info` already opens a qcow2's external data file, so the
//! refusal must come first. Layout from the qcow2 specification (docs/interop/qcow2.txt in
//! QEMU): a big-endian header, then header extensions up to the backing file name or the end
//! of the first cluster.

use super::LibraryError;
use std::io::Read;
use std::path::Path;

/// What a qcow2 header names besides the image itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qcow2Header {
    pub version: u32,
    /// The backing file name as qemu reads it (up to the first NUL); `None` when empty.
    pub backing: Option<Vec<u8>>,
    /// The backing file format extension, if present.
    pub backing_format: Option<String>,
    /// Incompatible feature bit 2: the guest data lives in an external data file.
    pub external_data: bool,
    /// The external data file name extension, if present (up to the first NUL).
    pub data_file: Option<Vec<u8>>,
}

/// What a file's first bytes say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Qcow2(Qcow2Header),
    /// Another format qemu knows (its qemu name); Flotilla takes only qcow2 and raw.
    Other(&'static str),
    /// Nothing recognized: bytes, read as a raw disk.
    Raw,
}

const QCOW_MAGIC: &[u8] = b"QFI\xfb";
/// Everything the checks need lies in the first cluster, at most 2 MiB (cluster_bits <= 21).
const MAX_CLUSTER_BITS: u32 = 21;
const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const EXT_DATA_FILE: u32 = 0x4441_5441;
const INCOMPAT_DATA_FILE: u64 = 1 << 2;

/// Reads the start of `path` and says what it is.
pub fn read(path: &Path) -> Result<Kind, LibraryError> {
    let unreadable = |source| LibraryError::Unreadable {
        path: path.to_owned(),
        source,
    };
    let f = std::fs::File::open(path).map_err(unreadable)?;
    let mut head = Vec::new();
    f.take(1 << MAX_CLUSTER_BITS)
        .read_to_end(&mut head)
        .map_err(unreadable)?;
    parse(&head).map_err(|reason| LibraryError::NotAnImage {
        path: path.to_owned(),
        reason,
    })
}

/// Big-endian integers; bytes past the end of the file read as zeros, as qemu reads them.
fn be(head: &[u8], at: u64, n: usize) -> u64 {
    (0..n).fold(0, |acc, i| {
        let byte = usize::try_from(at)
            .ok()
            .and_then(|a| a.checked_add(i))
            .and_then(|a| head.get(a))
            .copied()
            .unwrap_or(0);
        (acc << 8) | u64::from(byte)
    })
}

fn bytes_at(head: &[u8], at: u64, len: u64) -> Vec<u8> {
    (0..len).map(|i| be(head, at + i, 1) as u8).collect()
}

/// Up to the first NUL, as C code sees the string.
fn c_string(mut b: Vec<u8>) -> Vec<u8> {
    if let Some(nul) = b.iter().position(|&c| c == 0) {
        b.truncate(nul);
    }
    b
}

fn other_format(head: &[u8]) -> Option<&'static str> {
    let starts = |sig: &[u8]| head.starts_with(sig);
    if starts(b"QED\0") {
        Some("qed")
    } else if starts(b"KDMV") || starts(b"COWD") || starts(b"# Disk DescriptorFile") {
        Some("vmdk")
    } else if be(head, 0x40, 4) == 0x7f10_dabe {
        // 0xbeda107f, little-endian.
        Some("vdi")
    } else if starts(b"vhdxfile") {
        Some("vhdx")
    } else if starts(b"conectix") {
        Some("vpc")
    } else if starts(b"LUKS\xba\xbe") {
        Some("luks")
    } else if starts(b"WithoutFreeSpace") || starts(b"WithouFreSpacExt") {
        Some("parallels")
    } else if starts(b"Bochs Virtual HD Image") {
        Some("bochs")
    } else if starts(b"#!/bin/sh\n#V2.0 Format\n") {
        Some("cloop")
    } else {
        None
    }
}

fn parse(head: &[u8]) -> Result<Kind, String> {
    if !head.starts_with(QCOW_MAGIC) {
        return Ok(other_format(head).map_or(Kind::Raw, Kind::Other));
    }
    let damaged = |what: &str| format!("the qcow2 image is damaged or truncated ({what})");
    let version = be(head, 4, 4) as u32;
    match version {
        1 => return Ok(Kind::Other("qcow")),
        2 | 3 => {}
        v => {
            return Err(format!(
                "is a qcow2 image of version {v}, which Flotilla does not know"
            ))
        }
    }
    if head.len() < 72 {
        return Err(damaged("the header is cut short"));
    }
    let backing_offset = be(head, 8, 8);
    let backing_size = be(head, 16, 4);
    let cluster_bits = be(head, 20, 4) as u32;
    if !(9..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
        return Err(damaged("invalid cluster size"));
    }
    let cluster_size = 1u64 << cluster_bits;
    let (incompatible, header_length) = if version == 3 {
        if head.len() < 104 {
            return Err(damaged("the header is cut short"));
        }
        (be(head, 72, 8), be(head, 100, 4))
    } else {
        (0, 72)
    };
    if header_length < if version == 3 { 104 } else { 72 } || header_length > cluster_size {
        return Err(damaged("invalid header length"));
    }
    if backing_offset > cluster_size {
        return Err(damaged("invalid backing file offset"));
    }
    let backing = if backing_offset != 0 {
        if backing_size > 1023 || backing_size > cluster_size - backing_offset {
            return Err(damaged("backing file name too long"));
        }
        Some(c_string(bytes_at(head, backing_offset, backing_size))).filter(|b| !b.is_empty())
    } else {
        None
    };
    // Header extensions, read as qemu reads them: up to the backing file name or the end of
    // the first cluster; type 0 (or zeros past the end of the file) ends the list.
    let end = if backing_offset != 0 {
        backing_offset
    } else {
        cluster_size
    };
    let (mut backing_format, mut data_file) = (None, None);
    let mut at = header_length;
    while at < end {
        let (kind, len) = (be(head, at, 4) as u32, be(head, at + 4, 4));
        at += 8;
        if kind == EXT_END {
            break;
        }
        if at > end || len > end - at {
            return Err(damaged("a header extension runs past its area"));
        }
        match kind {
            EXT_BACKING_FORMAT => {
                backing_format =
                    Some(String::from_utf8_lossy(&c_string(bytes_at(head, at, len))).into_owned());
            }
            EXT_DATA_FILE => data_file = Some(c_string(bytes_at(head, at, len))),
            _ => {}
        }
        at += len.div_ceil(8) * 8;
    }
    Ok(Kind::Qcow2(Qcow2Header {
        version,
        backing,
        backing_format,
        external_data: incompatible & INCOMPAT_DATA_FILE != 0,
        data_file,
    }))
}

/// A file name from an image, fit for a message: no control characters, not too long.
pub fn shown(name: &[u8]) -> String {
    let s: String = String::from_utf8_lossy(name)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().count() > 200 {
        format!("{}…", s.chars().take(200).collect::<String>())
    } else {
        s
    }
}

/// The protocol prefix qemu would see in a file name (`nbd`, `http`, `json`, `file`…): the
/// part before a ':' that comes before any '/'.
pub fn protocol(name: &[u8]) -> Option<&[u8]> {
    let stop = name.iter().position(|&c| c == b':' || c == b'/')?;
    (name[stop] == b':').then(|| &name[..stop])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A qcow2 v3 header with 64 KiB clusters, extensions and a backing file name.
    fn header(incompatible: u64, exts: &[(u32, &[u8])], backing: Option<&[u8]>) -> Vec<u8> {
        let mut h = vec![0u8; 104];
        h[..4].copy_from_slice(QCOW_MAGIC);
        h[4..8].copy_from_slice(&3u32.to_be_bytes());
        h[20..24].copy_from_slice(&16u32.to_be_bytes());
        h[24..32].copy_from_slice(&(16u64 << 20).to_be_bytes());
        h[72..80].copy_from_slice(&incompatible.to_be_bytes());
        h[96..100].copy_from_slice(&4u32.to_be_bytes());
        h[100..104].copy_from_slice(&104u32.to_be_bytes());
        for (kind, data) in exts {
            h.extend_from_slice(&kind.to_be_bytes());
            h.extend_from_slice(&(data.len() as u32).to_be_bytes());
            h.extend_from_slice(data);
            h.resize(h.len().div_ceil(8) * 8, 0);
        }
        h.extend_from_slice(&[0; 8]);
        if let Some(b) = backing {
            let at = h.len() as u64;
            h[8..16].copy_from_slice(&at.to_be_bytes());
            h[16..20].copy_from_slice(&(b.len() as u32).to_be_bytes());
            h.extend_from_slice(b);
        }
        h
    }

    fn qcow2(h: &[u8]) -> Qcow2Header {
        match parse(h).unwrap() {
            Kind::Qcow2(q) => q,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn names_in_a_qcow2_header_are_found() {
        let plain = qcow2(&header(0, &[], None));
        assert_eq!(
            plain,
            Qcow2Header {
                version: 3,
                backing: None,
                backing_format: None,
                external_data: false,
                data_file: None
            }
        );
        let h = qcow2(&header(
            1 << 2,
            &[
                (0x6803_f857, &[1; 48]),
                (EXT_DATA_FILE, b"/root/.ssh/id_ed25519"),
            ],
            None,
        ));
        assert!(h.external_data);
        assert_eq!(h.data_file.as_deref(), Some(&b"/root/.ssh/id_ed25519"[..]));
        let h = qcow2(&header(
            0,
            &[(EXT_BACKING_FORMAT, b"qcow2")],
            Some(b"../base.qcow2\0ignored"),
        ));
        assert_eq!(h.backing.as_deref(), Some(&b"../base.qcow2"[..]));
        assert_eq!(h.backing_format.as_deref(), Some("qcow2"));
        assert_eq!(qcow2(&header(0, &[], Some(b"\0x"))).backing, None);
        // The extension list ends at the backing file name: a "data file" past it is not one.
        let mut past = header(0, &[], Some(b"b.qcow2"));
        past.extend_from_slice(&EXT_DATA_FILE.to_be_bytes());
        past.extend_from_slice(&4u32.to_be_bytes());
        past.extend_from_slice(b"/etc");
        assert_eq!(qcow2(&past).data_file, None);
    }

    #[test]
    fn damaged_headers_and_other_formats() {
        let mut long = header(0, &[(EXT_DATA_FILE, b"/x")], None);
        long[108..112].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(parse(&long).unwrap_err().contains("damaged"));
        let mut bits = header(0, &[], None);
        bits[20..24].copy_from_slice(&40u32.to_be_bytes());
        assert!(parse(&bits).unwrap_err().contains("cluster size"));
        assert!(parse(&header(0, &[], None)[..80])
            .unwrap_err()
            .contains("cut short"));
        let mut v9 = header(0, &[], None);
        v9[4..8].copy_from_slice(&9u32.to_be_bytes());
        assert!(parse(&v9).unwrap_err().contains("version 9"));
        let mut v1 = header(0, &[], None);
        v1[4..8].copy_from_slice(&1u32.to_be_bytes());
        assert_eq!(parse(&v1).unwrap(), Kind::Other("qcow"));
        assert_eq!(parse(b"KDMV\x01\0\0\0").unwrap(), Kind::Other("vmdk"));
        assert_eq!(parse(b"").unwrap(), Kind::Raw);
        assert_eq!(parse(&[0u8; 4096]).unwrap(), Kind::Raw);
    }

    #[test]
    fn protocols_in_file_names() {
        assert_eq!(protocol(b"nbd://127.0.0.1:1/x"), Some(&b"nbd"[..]));
        assert_eq!(protocol(b"json:{\"driver\":\"raw\"}"), Some(&b"json"[..]));
        assert_eq!(protocol(b"file:/etc/passwd"), Some(&b"file"[..]));
        assert_eq!(protocol(b"/srv/a:b.qcow2"), None);
        assert_eq!(protocol(b"./a:b.qcow2"), None);
        assert_eq!(protocol(b"base.qcow2"), None);
        assert_eq!(shown(b"a\nb\xff"), "a?b\u{fffd}");
    }
}
