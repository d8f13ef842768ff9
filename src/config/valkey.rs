//! `valkey`: the shared store of limits, keys and the cache (standalone or cluster), from the
//! config or the original service's `VALKEY_URL` / `REDIS_URL`.

use std::fmt;
use std::time::Duration;

use super::{ConfigError, Env, raw};

#[derive(Clone)]
pub struct ValkeySettings {
    /// One URL (standalone) or the cluster's seed nodes; passwords never appear in `Debug`.
    pub urls: Vec<String>,
    pub cluster: bool,
    pub timeout: Duration,
    /// Put before the name of every key the gateway reads or writes (with a `:` after it), so
    /// installations sharing a Valkey share nothing; empty: no prefix (the names of old).
    pub key_prefix: String,
}

impl fmt::Debug for ValkeySettings {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let redacted: Vec<String> = self.urls.iter().map(|u| redact_url(u)).collect();
        f.debug_struct("ValkeySettings")
            .field("urls", &redacted)
            .field("cluster", &self.cluster)
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// `redis://user:secret@host` → `redis://user:***@host`.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// Valkey from the config, or from the original service's `VALKEY_URL` / `REDIS_URL`.
pub(super) fn valkey_settings(
    raw: Option<&raw::RawValkey>,
    env: &dyn Env,
) -> Result<Option<ValkeySettings>, ConfigError> {
    let from_env = env.var("VALKEY_URL").or_else(|| env.var("REDIS_URL"));
    let (mut urls, cluster, timeout, password_env, key_prefix) = match raw {
        Some(v) => {
            let mut urls: Vec<String> = v.url.iter().cloned().collect();
            urls.extend(v.urls.iter().cloned());
            (urls, v.cluster, v.timeout, v.password_env.clone(), v.key_prefix.clone().unwrap_or_default())
        }
        None => (Vec::new(), false, None, None, String::new()),
    };
    // Braces would move keys off their hash tag's slot, glob characters would turn the cache's
    // SCAN patterns into other patterns: a prefix is a plain name.
    let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/');
    if key_prefix.len() > 128 || !key_prefix.bytes().all(plain) {
        return Err(ConfigError(format!(
            "valkey.key_prefix: {key_prefix:?} must be at most 128 letters, digits and - _ . : /"
        )));
    }
    if let Some(url) = from_env {
        urls.insert(0, url);
        urls.dedup();
    }
    if urls.is_empty() {
        return match raw {
            Some(_) => Err(ConfigError("valkey.url: required (or set VALKEY_URL)".into())),
            None => Ok(None),
        };
    }
    if let Some(var) = password_env {
        let Some(password) = env.var(&var) else {
            return Err(ConfigError(format!("valkey.password_env: environment variable {var} is not set")));
        };
        urls = urls
            .into_iter()
            .map(|u| match u.split_once("://") {
                Some((scheme, rest)) if !rest.contains('@') => format!("{scheme}://:{password}@{rest}"),
                _ => u,
            })
            .collect();
    }
    for (i, url) in urls.iter().enumerate() {
        if redis::IntoConnectionInfo::into_connection_info(url.as_str()).is_err() {
            return Err(ConfigError(format!("valkey.urls[{i}]: {:?} is not a redis:// URL", redact_url(url))));
        }
    }
    let timeout = timeout.unwrap_or(Duration::from_millis(250));
    Ok(Some(ValkeySettings { urls, cluster, timeout, key_prefix }))
}
