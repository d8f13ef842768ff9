//! The settings of the cloud platform dialects (`gemini`, `bedrock`, `vertex`): where each
//! serves, its default endpoint and the variable its key is read from.

use super::raw::RawProvider;
use super::{ConfigError, Dialect};

/// Bedrock's region, Vertex's project and location; empty for the other dialects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloudSpec {
    pub region: Option<String>,
    pub project: Option<String>,
    pub location: Option<String>,
}

impl CloudSpec {
    /// The platform's public endpoint, when the configuration names none.
    pub fn default_base_url(&self, dialect: Dialect) -> Option<String> {
        match dialect {
            Dialect::Gemini => Some("https://generativelanguage.googleapis.com".into()),
            Dialect::Bedrock => self.region.as_ref().map(|r| format!("https://bedrock-runtime.{r}.amazonaws.com")),
            Dialect::Vertex => self.location.as_ref().map(|l| match l.as_str() {
                "global" => "https://aiplatform.googleapis.com".to_owned(),
                l => format!("https://{l}-aiplatform.googleapis.com"),
            }),
            _ => None,
        }
    }
}

/// The variable a platform's API key is read from unless `api_key_env` names another: the
/// Gemini API key, or a Bedrock API key (sent as a bearer token instead of SigV4).
pub fn default_key_env(dialect: Dialect) -> Option<&'static str> {
    match dialect {
        Dialect::Gemini => Some("GEMINI_API_KEY"),
        Dialect::Bedrock => Some("AWS_BEARER_TOKEN_BEDROCK"),
        _ => None,
    }
}

/// Checks that each platform has what it needs, and nothing another one does.
pub fn build(path: &str, dialect: Dialect, raw: &RawProvider) -> Result<CloudSpec, ConfigError> {
    let err = |field: &str, msg: &str| ConfigError(format!("{path}.{field}: {msg}"));
    let fields = [("region", &raw.region), ("project", &raw.project), ("location", &raw.location)];
    let wanted: &[&str] = match dialect {
        Dialect::Bedrock => &["region"],
        Dialect::Vertex => &["project", "location"],
        _ => &[],
    };
    for (name, value) in fields {
        match (wanted.contains(&name), value) {
            (true, None) => return Err(err(name, "required for this dialect")),
            (false, Some(_)) => {
                return Err(err(name, "only for dialects bedrock (region) and vertex (project, location)"));
            }
            (true, Some(v)) if v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') => {
                return Err(err(name, "must be letters, digits and dashes"));
            }
            _ => {}
        }
    }
    Ok(CloudSpec { region: raw.region.clone(), project: raw.project.clone(), location: raw.location.clone() })
}
