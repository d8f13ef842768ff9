//! The vendor catalogue: one declarative descriptor per vendor in `providers/`, embedded at build
//! time. A config provider names one (`vendor: openai`) and overrides what it needs.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;

/// `(file stem, YAML text)` of every descriptor in `providers/`.
pub const EMBEDDED: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/providers.rs"));

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Descriptor {
    pub name: String,
    pub display_name: Option<String>,
    /// Software an operator runs on its own machines (vLLM, Ollama, ...): its deployments cost
    /// nothing unless the config gives them a price. Any other vendor bills per token, and a model
    /// of it with no price here is reported at start.
    #[serde(default)]
    pub self_hosted: bool,
    pub dialect: String,
    pub base_url: Option<String>,
    pub auth: Option<String>,
    pub auth_header: Option<String>,
    pub api_key_env: Option<String>,
    pub stream_usage: Option<String>,
    /// Serves the Responses API (`/responses`) itself: passed through rather than bridged.
    pub responses_api: Option<bool>,
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub docs: Option<String>,
    #[serde(default)]
    pub models: BTreeMap<String, ModelInfo>,
}

/// What the catalogue knows about one upstream model. Prices are integer nano-dollars per token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelInfo {
    pub context_window: Option<u64>,
    pub max_output_tokens: Option<u64>,
    pub input_nanos_per_token: Option<u64>,
    pub output_nanos_per_token: Option<u64>,
    pub cached_input_nanos_per_token: Option<u64>,
    /// Writing to the prompt cache with the vendor's short lifetime (Anthropic 5 minutes, OpenAI
    /// 30 minutes; billed above the input price); default: input.
    pub cache_write_nanos_per_token: Option<u64>,
    /// Writing with the long lifetime (Anthropic 1 hour, OpenAI 12 hours), where priced; default:
    /// the short write's. Costed where usage tells the lifetimes apart (Anthropic's
    /// `cache_creation.ephemeral_1h_input_tokens`); OpenAI's usage does not, so its writes cost
    /// `cache_write_nanos_per_token`.
    pub cache_write_long_nanos_per_token: Option<u64>,
    /// For local counting: a tiktoken encoding (`o200k_base`, `cl100k_base`, ...) or a path to a
    /// Hugging Face `tokenizer.json`.
    pub tokenizer: Option<String>,
}

/// Parses one descriptor, checking that its `name` matches the file it came from.
pub fn parse(stem: &str, text: &str) -> Result<Descriptor, String> {
    let descriptor: Descriptor = serde_yaml_ng::from_str(text).map_err(|e| format!("providers/{stem}.yaml: {e}"))?;
    if descriptor.name != stem {
        return Err(format!("providers/{stem}.yaml: name: {:?} must equal the file name {stem:?}", descriptor.name));
    }
    Ok(descriptor)
}

/// The embedded catalogue, parsed once. A descriptor that fails to parse is a build defect that
/// the catalogue test catches; at run time it is reported by `lookup`.
pub fn catalogue() -> &'static BTreeMap<String, Result<Descriptor, String>> {
    static CATALOGUE: OnceLock<BTreeMap<String, Result<Descriptor, String>>> = OnceLock::new();
    CATALOGUE.get_or_init(|| EMBEDDED.iter().map(|(stem, text)| ((*stem).to_owned(), parse(stem, text))).collect())
}

pub fn lookup(vendor: &str) -> Result<&'static Descriptor, String> {
    match catalogue().get(vendor) {
        Some(Ok(descriptor)) => Ok(descriptor),
        Some(Err(e)) => Err(e.clone()),
        None => Err(format!(
            "unknown vendor {vendor:?} (known: {})",
            catalogue().keys().cloned().collect::<Vec<_>>().join(", ")
        )),
    }
}
