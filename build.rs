//! Embeds every `providers/*.yaml` descriptor into the binary as the default vendor catalogue.

use std::fmt::Write as _;
use std::{env, fs, path::Path};

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("providers");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<_> = fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let mut out = String::from("&[\n");
    for path in &files {
        println!("cargo:rerun-if-changed={}", path.display());
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        writeln!(out, "    ({stem:?}, include_str!({:?})),", path.display().to_string()).ok();
    }
    out.push(']');
    let target = Path::new(&env::var("OUT_DIR").unwrap_or_default()).join("providers.rs");
    fs::write(target, out).ok();
}
