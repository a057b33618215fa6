//! Definition versions.

use super::{bytes, print_json, table};

pub fn def_version(json: bool, v: &crate::inventory::DefinitionVersion) {
    if json {
        return print_json(v);
    }
    say!(
        "{} v{} ({}) — {}",
        v.name,
        v.version,
        &v.hash[..12],
        v.change
    );
}

pub fn def_versions(json: bool, list: &[crate::inventory::DefinitionVersion]) {
    if json {
        return print_json(list);
    }
    if list.is_empty() {
        say!("No definitions. Create one with: flotillactl def create NAME");
        return;
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|v| {
            vec![
                v.name.clone(),
                format!("v{}", v.version),
                v.hash[..12].to_string(),
                v.created_at.clone(),
                v.change.clone(),
            ]
        })
        .collect();
    table(&["NAME", "VERSION", "HASH", "CREATED", "CHANGE"], &rows);
}

pub fn def_show(json: bool, d: &crate::ops::definitions::DefinitionView) {
    if json {
        return print_json(d);
    }
    say!(
        "# {} v{} ({})",
        d.version.name,
        d.version.version,
        d.version.hash
    );
    say!("{}", d.text.trim_end());
    if !d.packages.is_empty() {
        say!("# packages in the directory:");
        for p in &d.packages {
            say!("#   {}  {}  {}", p.sha256, bytes(p.size), p.file);
        }
    }
}
