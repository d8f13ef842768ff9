//! Every example in `config/` and every vendor descriptor in `providers/` goes through the real
//! validator, so a shipped file can never be one the gateway rejects.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a test crate: a failure stops it at once, and it reports on stdout"
)]

use std::collections::HashMap;
use std::path::Path;

use llm_gateway::config::Config;
use llm_gateway::providers;

#[test]
fn every_config_example_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            // Secrets referenced by `*_env` are deploy-time facts: unset here, they only warn.
            let config = Config::load(path.to_str().unwrap(), &HashMap::<&str, &str>::new())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                !config.models.is_empty() || config.default_backend.is_some(),
                "{}: routes nothing",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 1, "no config examples found");
}

#[test]
fn every_vendor_descriptor_is_embedded_and_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("providers");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut embedded: Vec<String> = providers::EMBEDDED.iter().map(|(stem, _)| stem.to_string()).collect();
    // (build.rs orders by file name: `gemini-openai.yaml` before `gemini.yaml`.)
    embedded.sort();
    assert_eq!(on_disk, embedded, "build.rs embeds exactly the files in providers/");
    for required in [
        "openai",
        "anthropic",
        "azure-openai",
        "vllm",
        "ollama",
        "tgi",
        "llama-cpp",
        "gemini-openai",
        "groq",
        "together",
        "mistral",
        "deepseek",
        "openrouter",
        "gemini",
        "bedrock",
        "vertex",
    ] {
        assert!(embedded.contains(&required.to_string()), "missing descriptor {required}");
    }
    for (stem, text) in providers::EMBEDDED {
        let d = providers::parse(stem, text).unwrap_or_else(|e| panic!("{e}"));
        for (model, info) in &d.models {
            if let (Some(input), Some(cached)) = (info.input_nanos_per_token, info.cached_input_nanos_per_token) {
                assert!(cached <= input, "{stem}: {model}: cached input dearer than input");
            }
        }
        // Each descriptor must also be usable as a config provider as-is.
        // (The cloud platforms need to be told where: a region, a project and location.)
        let place = match d.dialect.as_str() {
            "bedrock" => ", region: us-east-1",
            "vertex" => ", project: my-project, location: global",
            _ => "",
        };
        let yaml = format!("providers:\n  p: {{ vendor: {stem}{place} }}\n");
        Config::from_yaml(&yaml, &HashMap::<&str, &str>::new()).unwrap_or_else(|e| panic!("vendor {stem}: {e}"));
    }
}
