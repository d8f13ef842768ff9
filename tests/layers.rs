//! The import graph points one way: a module of `src/` may use (`crate::…`) only modules of its
//! own layer or of layers below it, as in the stage table of `lib.rs` — the stages in the order a
//! request meets them, then the shared vocabulary and the infrastructure they all use, with
//! `app` alone on top. Test code (`#[cfg(test)]` parts and test-only files) may use anything.
//!
//! `KNOWN_UPWARD` lists the upward imports still in the tree, each to be removed; the test also
//! fails when one of them is gone (so the list only shrinks). Adding an upward import means
//! adding it here: a visible, reviewed change.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, reason = "a test crate")]

use std::collections::BTreeSet;
use std::path::Path;

/// Each top-level module and its layer: a module may import its own layer and lower ones.
const LAYERS: &[(&str, u32)] = &[
    ("app", 100),
    // The stages, from the client inwards.
    ("server", 90),
    ("ingress", 80),
    ("pipeline", 75),
    ("auth", 70),
    ("limits", 60),
    ("cache", 50),
    ("responses_store", 50),
    ("router", 45),
    ("adapter", 40),
    ("upstream", 35),
    ("metering", 32),
    ("request_log", 32),
    ("spend", 31),
    ("stream", 30),
    // Infrastructure.
    ("telemetry", 20),
    ("http", 18),
    ("kv", 15),
    // Shared vocabulary.
    ("ctx", 10),
    ("error", 8),
    ("config", 6),
    ("api", 5),
    ("providers", 4),
    ("clock", 2),
];

/// (importing file, imported module): upward imports still to be removed.
const KNOWN_UPWARD: &[(&str, &str)] = &[
    ("src/ctx.rs", "limits"),
    ("src/ctx.rs", "telemetry"),
    // The cloud transport asks the Bedrock and Gemini adapters for the model's path and for the
    // platform's error classification, and decodes Bedrock's event stream with the adapter's
    // decoder: both belong in the exchange (`adapter::Exchange`) and the wire vocabulary (`api`).
    ("src/upstream/cloud.rs", "adapter"),
    // Embeddings on a cloud platform are several calls per request (Titan takes one text a call):
    // the transport sends the calls `adapter::cloud::embed` plans and joins their answers with
    // its reader. The plan and the reader are wire vocabulary and belong in `api`.
    ("src/upstream/cloud/embed.rs", "adapter"),
];

/// Files that are test code as a whole.
const TEST_FILES: &[&str] = &["tests.rs", "fixtures.rs", "props.rs", "roundtrip.rs"];

fn layer(module: &str) -> Option<u32> {
    LAYERS.iter().find(|(name, _)| *name == module).map(|(_, rank)| *rank)
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `crate::<module>` a file's non-test code names, as (file, module).
fn upward_imports(root: &Path) -> BTreeSet<(String, String)> {
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    let mut upward = BTreeSet::new();
    for file in files {
        let relative = file.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        if TEST_FILES.contains(&name.as_str()) {
            continue;
        }
        let top = relative.trim_start_matches("src/").split('/').next().unwrap().trim_end_matches(".rs").to_owned();
        let Some(own) = layer(&top) else { continue };
        let text = std::fs::read_to_string(&file).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (at, _) in code.match_indices("crate::") {
            let rest = &code[at + "crate::".len()..];
            let module: String = rest.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
            if let Some(theirs) = layer(&module)
                && module != top
                && theirs > own
            {
                upward.insert((relative.clone(), module));
            }
        }
    }
    upward
}

#[test]
fn modules_import_only_their_own_layer_and_those_below() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let found = upward_imports(root);
    let known: BTreeSet<(String, String)> = KNOWN_UPWARD.iter().map(|(f, m)| (f.to_string(), m.to_string())).collect();
    let new: Vec<_> = found.difference(&known).collect();
    assert!(
        new.is_empty(),
        "imports of a layer above the importer (move the type down, or list it in KNOWN_UPWARD): {new:?}"
    );
    let gone: Vec<_> = known.difference(&found).collect();
    assert!(gone.is_empty(), "these upward imports are gone: take them off KNOWN_UPWARD: {gone:?}");
}

#[test]
fn every_module_of_src_has_a_layer() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for entry in std::fs::read_dir(root.join("src")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().trim_end_matches(".rs").to_owned();
        if name == "lib" || name == "main" {
            continue;
        }
        assert!(layer(&name).is_some(), "src/{name} has no layer in LAYERS");
    }
}
