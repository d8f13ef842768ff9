//! The `cache:` section: exact and semantic response caching, as written (strict serde) and as
//! validated. Validation checks shapes and names only: it never loads the embedding model nor
//! contacts Valkey, so `--check-config` and the shipped-file test stay offline and fast.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Env, ModelSpec, Secret, TeamPolicy, duration};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    /// Master switch (default true when the section is present).
    pub enabled: Option<bool>,
    #[serde(default)]
    pub exact: RawExact,
    pub semantic: Option<RawSemantic>,
    /// Responses larger than this (uncompressed JSON) are not stored (default 1 MiB).
    pub max_entry_bytes: Option<u64>,
    /// Store answers that stopped at the token limit (`finish_reason: length`); default false.
    pub store_length_stops: Option<bool>,
    /// Prefix of every Valkey key the cache writes (default `llmgw:cache`), under `valkey.key_prefix`.
    pub key_prefix: Option<String>,
    /// Per-team switches: `{ team-b: { enabled: false } }`, `{ team-c: { semantic: false } }`.
    #[serde(default)]
    pub teams: BTreeMap<String, RawTeamCache>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawExact {
    pub enabled: Option<bool>,
    /// Absolute lifetime of an entry; hits do not extend it (default 1h).
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub ttl: Option<Duration>,
    /// Bytes of responses each replica keeps in memory (default 64 MiB).
    pub l1_max_bytes: Option<u64>,
    /// With Valkey, how long a replica trusts its in-memory copy before reading Valkey again
    /// (default 5s; never past the entry's expiry).
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub l1_ttl: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSemantic {
    pub enabled: Option<bool>,
    /// Cosine similarity a candidate needs to be served (default 0.95).
    pub threshold: Option<f32>,
    /// Per-model thresholds (model group or alias → similarity).
    #[serde(default)]
    pub thresholds: BTreeMap<String, f32>,
    pub embedder: Option<RawEmbedder>,
    /// Entry lifetime (default: the exact tier's).
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub ttl: Option<Duration>,
    /// Requests with a higher temperature use the exact tier only (default 1.0).
    pub max_temperature: Option<f64>,
    /// Conversations longer than this (messages, system included) use the exact tier only
    /// (default 4).
    pub max_messages: Option<usize>,
    /// Where candidates are searched: `auto` (valkey-search when the module is loaded, else the
    /// in-process index), `memory`, or `valkey-search`.
    pub index: Option<String>,
    /// A partition switches from an exact scan to an HNSW graph above this many vectors
    /// (default 4096).
    pub hnsw_min_vectors: Option<usize>,
    /// Vectors each replica keeps in memory across all partitions (default 200000).
    pub max_vectors: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEmbedder {
    /// `local` (a sentence-embedding model in this process) or `remote` (`/v1/embeddings`).
    pub kind: String,
    /// local: directory with `config.json`, `model.safetensors`, `tokenizer.json`.
    pub path: Option<String>,
    /// remote: a model this gateway routes, or the model name sent to `url`.
    pub model: Option<String>,
    /// remote: base URL of an OpenAI-compatible server (TEI, vLLM, OpenAI), e.g. `http://tei:8080/v1`.
    pub url: Option<String>,
    pub api_key_env: Option<String>,
    /// Longest last-user-message the semantic tier embeds, in model tokens (local; default 128).
    /// Longer prompts use the exact tier only: a truncated embedding would compare prefixes.
    pub max_tokens: Option<usize>,
    /// Longest last-user-message in characters (default 2000), checked before embedding.
    pub max_chars: Option<usize>,
    /// local: embedding threads (default 1) and requests allowed to wait for one (default 32);
    /// beyond that the semantic tier is skipped (a miss), never queued.
    pub threads: Option<usize>,
    pub queue: Option<usize>,
    /// Embeddings remembered by text (default 10000).
    pub cache_entries: Option<u64>,
    /// remote: per-call timeout (default 2s).
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub timeout: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTeamCache {
    pub enabled: Option<bool>,
    pub semantic: Option<bool>,
}

/// The validated cache configuration (`Config::cache`; `None` = no cache).
#[derive(Debug, Clone)]
pub struct CacheSettings {
    pub exact: ExactSettings,
    pub semantic: Option<SemanticSettings>,
    pub max_entry_bytes: usize,
    pub store_length_stops: bool,
    pub key_prefix: String,
    pub teams: BTreeMap<String, TeamCache>,
}

#[derive(Debug, Clone, Copy)]
pub struct ExactSettings {
    pub enabled: bool,
    pub ttl: Duration,
    pub l1_max_bytes: u64,
    pub l1_ttl: Duration,
}

#[derive(Debug, Clone)]
pub struct SemanticSettings {
    pub threshold: f32,
    /// Keyed by model group (aliases resolved).
    pub thresholds: BTreeMap<String, f32>,
    pub embedder: EmbedderSettings,
    pub ttl: Duration,
    pub max_temperature: f64,
    pub max_messages: usize,
    pub index: IndexMode,
    pub hnsw_min_vectors: usize,
    pub max_vectors: usize,
}

impl SemanticSettings {
    pub fn threshold_for(&self, model_group: &str) -> f32 {
        self.thresholds.get(model_group).copied().unwrap_or(self.threshold)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexMode {
    Auto,
    Memory,
    ValkeySearch,
}

#[derive(Debug, Clone)]
pub struct EmbedderSettings {
    pub kind: EmbedderKind,
    pub max_tokens: usize,
    pub max_chars: usize,
    pub cache_entries: u64,
}

#[derive(Debug, Clone)]
pub enum EmbedderKind {
    Local {
        path: PathBuf,
        threads: usize,
        queue: usize,
    },
    /// Through this gateway's own router.
    Routed {
        model: String,
        timeout: Duration,
    },
    Url {
        base_url: String,
        model: String,
        api_key: Option<Secret>,
        timeout: Duration,
    },
}

#[derive(Debug, Clone, Copy)]
pub struct TeamCache {
    pub enabled: bool,
    pub semantic: bool,
}

pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);

pub(super) fn validate(
    raw: Option<&RawCache>,
    models: &BTreeMap<String, ModelSpec>,
    aliases: &BTreeMap<String, String>,
    teams: &BTreeMap<String, TeamPolicy>,
    has_default_backend: bool,
    env: &dyn Env,
) -> Result<Option<CacheSettings>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    if raw.enabled == Some(false) {
        return Ok(None);
    }
    let exact = ExactSettings {
        enabled: raw.exact.enabled.unwrap_or(true),
        ttl: raw.exact.ttl.unwrap_or(DEFAULT_TTL),
        l1_max_bytes: raw.exact.l1_max_bytes.unwrap_or(64 * 1024 * 1024),
        l1_ttl: raw.exact.l1_ttl.unwrap_or(Duration::from_secs(5)),
    };
    if exact.ttl < Duration::from_secs(1) {
        return Err(err("exact.ttl", "must be at least 1s".into()));
    }

    let semantic = match &raw.semantic {
        Some(s) if s.enabled != Some(false) => {
            Some(semantic_settings(s, exact.ttl, models, aliases, has_default_backend, env)?)
        }
        _ => None,
    };

    let max_entry_bytes = match raw.max_entry_bytes {
        Some(0) => return Err(err("max_entry_bytes", "must be greater than 0".into())),
        Some(n) => usize::try_from(n).map_err(|_| err("max_entry_bytes", "too large".into()))?,
        None => 1024 * 1024,
    };
    let key_prefix = raw.key_prefix.clone().unwrap_or_else(|| "llmgw:cache".into());
    if key_prefix.is_empty() || key_prefix.contains(['{', '}', ' ', '*']) {
        return Err(err("key_prefix", format!("{key_prefix:?} must be non-empty, without braces, spaces or '*'")));
    }
    let mut team_settings = BTreeMap::new();
    for (team, t) in &raw.teams {
        if !teams.contains_key(team) {
            return Err(err(&format!("teams.{team}"), format!("unknown team {team:?}")));
        }
        let enabled = t.enabled.unwrap_or(true);
        team_settings.insert(team.clone(), TeamCache { enabled, semantic: enabled && t.semantic.unwrap_or(true) });
    }
    Ok(Some(CacheSettings {
        exact,
        semantic,
        max_entry_bytes,
        store_length_stops: raw.store_length_stops.unwrap_or(false),
        key_prefix,
        teams: team_settings,
    }))
}

/// An error naming the path under `cache.`.
fn err(path: &str, msg: String) -> ConfigError {
    ConfigError(format!("cache.{path}: {msg}"))
}

/// `cache.semantic` when enabled: thresholds (per model group), the embedder, the TTL
/// (default: the exact tier's), the index and the prompt shape it matches.
fn semantic_settings(
    s: &RawSemantic,
    exact_ttl: Duration,
    models: &BTreeMap<String, ModelSpec>,
    aliases: &BTreeMap<String, String>,
    has_default_backend: bool,
    env: &dyn Env,
) -> Result<SemanticSettings, ConfigError> {
    let resolve = |name: &str| -> Option<String> {
        if models.contains_key(name) { Some(name.to_owned()) } else { aliases.get(name).cloned() }
    };
    let threshold = s.threshold.unwrap_or(0.95);
    let check = |path: &str, t: f32| {
        if t.is_finite() && t > 0.0 && t <= 1.0 {
            Ok(())
        } else {
            Err(err(path, format!("must be in (0, 1], not {t}")))
        }
    };
    check("semantic.threshold", threshold)?;
    let mut thresholds = BTreeMap::new();
    for (model, t) in &s.thresholds {
        check(&format!("semantic.thresholds.{model}"), *t)?;
        let group = resolve(model)
            .ok_or_else(|| err(&format!("semantic.thresholds.{model}"), format!("unknown model {model:?}")))?;
        thresholds.insert(group, *t);
    }
    let embedder = s
        .embedder
        .as_ref()
        .ok_or_else(|| err("semantic.embedder", "required when the semantic tier is enabled".into()))?;
    let embedder = embedder_settings(embedder, models, aliases, has_default_backend, env)?;
    let ttl = s.ttl.unwrap_or(exact_ttl);
    if ttl < Duration::from_secs(1) {
        return Err(err("semantic.ttl", "must be at least 1s".into()));
    }
    let max_temperature = s.max_temperature.unwrap_or(1.0);
    if !(max_temperature.is_finite() && max_temperature >= 0.0) {
        return Err(err("semantic.max_temperature", "must be a number >= 0".into()));
    }
    let index = match s.index.as_deref().unwrap_or("auto") {
        "auto" => IndexMode::Auto,
        "memory" => IndexMode::Memory,
        "valkey-search" => IndexMode::ValkeySearch,
        other => {
            return Err(err(
                "semantic.index",
                format!("unknown index {other:?} (expected auto, memory or valkey-search)"),
            ));
        }
    };
    let max_messages = s.max_messages.unwrap_or(4);
    if max_messages == 0 {
        return Err(err("semantic.max_messages", "must be at least 1".into()));
    }
    Ok(SemanticSettings {
        threshold,
        thresholds,
        embedder,
        ttl,
        max_temperature,
        max_messages,
        index,
        hnsw_min_vectors: s.hnsw_min_vectors.unwrap_or(4096).max(64),
        max_vectors: s.max_vectors.unwrap_or(200_000).max(1),
    })
}

fn embedder_settings(
    raw: &RawEmbedder,
    models: &BTreeMap<String, ModelSpec>,
    aliases: &BTreeMap<String, String>,
    has_default_backend: bool,
    env: &dyn Env,
) -> Result<EmbedderSettings, ConfigError> {
    let err = |field: &str, msg: String| ConfigError(format!("cache.semantic.embedder.{field}: {msg}"));
    let timeout = raw.timeout.unwrap_or(Duration::from_secs(2));
    let kind = match raw.kind.as_str() {
        "local" => {
            let path = raw.path.as_deref().filter(|p| !p.is_empty()).ok_or_else(|| {
                err("path", "required for a local embedder (a directory with model.safetensors)".into())
            })?;
            for (field, given) in [("model", raw.model.is_some()), ("url", raw.url.is_some())] {
                if given {
                    return Err(err(field, "only for a remote embedder".into()));
                }
            }
            let threads = raw.threads.unwrap_or(1);
            if threads == 0 || threads > 64 {
                return Err(err("threads", "must be between 1 and 64".into()));
            }
            EmbedderKind::Local { path: PathBuf::from(path), threads, queue: raw.queue.unwrap_or(32).max(1) }
        }
        "remote" => {
            let model = raw
                .model
                .clone()
                .filter(|m| !m.is_empty())
                .ok_or_else(|| err("model", "required for a remote embedder".into()))?;
            if raw.path.is_some() {
                return Err(err("path", "only for a local embedder".into()));
            }
            match &raw.url {
                Some(url) => {
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        return Err(err("url", format!("{url:?} must start with http:// or https://")));
                    }
                    let api_key = match &raw.api_key_env {
                        Some(var) => Some(Secret::new(
                            env.var(var)
                                .ok_or_else(|| err("api_key_env", format!("environment variable {var} is not set")))?,
                        )),
                        None => None,
                    };
                    EmbedderKind::Url { base_url: url.trim_end_matches('/').to_owned(), model, api_key, timeout }
                }
                None => {
                    let known = models.contains_key(&model) || aliases.contains_key(&model) || has_default_backend;
                    if !known {
                        return Err(err("model", format!("unknown model {model:?} (or give a url)")));
                    }
                    EmbedderKind::Routed { model, timeout }
                }
            }
        }
        other => return Err(err("kind", format!("unknown embedder kind {other:?} (expected local or remote)"))),
    };
    Ok(EmbedderSettings {
        kind,
        max_tokens: raw.max_tokens.unwrap_or(128).clamp(8, 512),
        max_chars: raw.max_chars.unwrap_or(2000).max(16),
        cache_entries: raw.cache_entries.unwrap_or(10_000),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use crate::config::Config;

    const BASE: &str = "
keys:
  - { key: sk-a, team: team-a }
teams:
  team-a: { models: ['*'] }
providers:
  mock: { dialect: mock }
models:
  gpt: { deployments: [ { provider: mock } ] }
  embed: { deployments: [ { provider: mock, model: mock-embed } ] }
aliases:
  gpt-alias: gpt
";

    fn load(cache: &str) -> Result<Config, String> {
        Config::from_yaml(&format!("{BASE}cache:\n{cache}"), &HashMap::<&str, &str>::new()).map_err(|e| e.0)
    }

    #[test]
    fn the_issue_example_and_defaults() {
        let config = load(
            "  exact: { enabled: true, ttl: 1h }
  semantic: { enabled: true, threshold: 0.95, embedder: { kind: local, path: /models/all-MiniLM-L6-v2 }, thresholds: { gpt-alias: 0.97 } }",
        )
        .unwrap();
        let cache = config.cache.unwrap();
        assert_eq!(cache.exact.ttl, super::DEFAULT_TTL);
        let semantic = cache.semantic.unwrap();
        assert_eq!(semantic.threshold_for("gpt"), 0.97, "aliases resolve to their model group");
        assert_eq!(semantic.threshold_for("embed"), 0.95);
        assert_eq!(semantic.max_messages, 4);
        assert!(load("  enabled: false").unwrap().cache.is_none());
        let routed = load("  semantic: { embedder: { kind: remote, model: embed } }").unwrap();
        assert!(matches!(routed.cache.unwrap().semantic.unwrap().embedder.kind, super::EmbedderKind::Routed { .. }));
    }

    #[test]
    fn errors_name_the_path() {
        let e = load("  semantic: { threshold: 1.5, embedder: { kind: local, path: /m } }").unwrap_err();
        assert!(e.starts_with("cache.semantic.threshold: must be in (0, 1]"), "{e}");
        let e = load("  semantic: { threshold: 0.9 }").unwrap_err();
        assert!(e.starts_with("cache.semantic.embedder: required"), "{e}");
        let e = load("  semantic: { embedder: { kind: remote, model: nope } }").unwrap_err();
        assert!(e.starts_with("cache.semantic.embedder.model: unknown model \"nope\""), "{e}");
        let e = load("  semantic: { embedder: { kind: onnx } }").unwrap_err();
        assert!(e.starts_with("cache.semantic.embedder.kind: unknown embedder kind"), "{e}");
        let e = load("  teams: { team-z: { enabled: false } }").unwrap_err();
        assert!(e.starts_with("cache.teams.team-z: unknown team"), "{e}");
        let e = load("  exact: { ttl: 1h, tll: 2h }").unwrap_err();
        assert!(e.contains("cache.exact") && e.contains("unknown field `tll`"), "{e}");
        let e = load("  semantic: { thresholds: { nope: 0.9 }, embedder: { kind: local, path: /m } }").unwrap_err();
        assert!(e.starts_with("cache.semantic.thresholds.nope: unknown model"), "{e}");
    }
}
