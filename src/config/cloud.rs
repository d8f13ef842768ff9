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
    /// Which Bedrock API serves a deployment (`api`).
    pub bedrock_api: BedrockApi,
}

/// Bedrock's two generation APIs: Converse (every model family, translated), or InvokeModel
/// with Claude's own Messages body (`anthropic_version: bedrock-2023-05-31`, passed through).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BedrockApi {
    /// InvokeModel for Anthropic Claude model ids (`anthropic.claude…`, with or without an
    /// inference profile's region prefix, or in an ARN), Converse for the rest.
    #[default]
    Auto,
    Converse,
    Invoke,
}

impl BedrockApi {
    /// Whether `model` is served by InvokeModel with a Messages body.
    pub fn invokes(self, model: &str) -> bool {
        match self {
            Self::Auto => model.contains("anthropic.claude"),
            Self::Converse => false,
            Self::Invoke => true,
        }
    }
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
    let bedrock_api = match (dialect, raw.api.as_deref()) {
        (_, None) => BedrockApi::Auto,
        (Dialect::Bedrock, Some("auto")) => BedrockApi::Auto,
        (Dialect::Bedrock, Some("converse")) => BedrockApi::Converse,
        (Dialect::Bedrock, Some("invoke")) => BedrockApi::Invoke,
        (Dialect::Bedrock, Some(other)) => {
            return Err(err("api", &format!("{other:?} is not one of auto, converse, invoke")));
        }
        (_, Some(_)) => return Err(err("api", "only for dialect bedrock (auto, converse or invoke)")),
    };
    Ok(CloudSpec {
        region: raw.region.clone(),
        project: raw.project.clone(),
        location: raw.location.clone(),
        bedrock_api,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use crate::config::{AuthStyle, Config, Dialect};

    fn provider(yaml: &str, env: &[(&str, &str)]) -> Result<std::sync::Arc<crate::config::ProviderSpec>, String> {
        let env: HashMap<&str, &str> = env.iter().copied().collect();
        let config = Config::from_yaml(&format!("providers:\n  p: {yaml}\n"), &env).map_err(|e| e.0)?;
        Ok(config.providers["p"].clone())
    }

    #[test]
    fn each_platform_gets_its_endpoint_and_credential_from_where_it_serves() {
        let gemini = provider("{ dialect: gemini }", &[("GEMINI_API_KEY", "AIza-k")]).unwrap();
        assert_eq!(gemini.dialect, Dialect::Gemini);
        assert_eq!(gemini.base_url, "https://generativelanguage.googleapis.com");
        assert_eq!(gemini.auth, AuthStyle::Header("x-goog-api-key".into()));
        assert_eq!(gemini.api_key.as_ref().unwrap().expose(), "AIza-k");

        let bedrock = provider("{ dialect: bedrock, region: eu-west-3 }", &[]).unwrap();
        assert_eq!(bedrock.base_url, "https://bedrock-runtime.eu-west-3.amazonaws.com");
        assert!(bedrock.api_key.is_none(), "no Bedrock API key: requests are signed");
        let keyed =
            provider("{ dialect: bedrock, region: us-east-1 }", &[("AWS_BEARER_TOKEN_BEDROCK", "ABSK")]).unwrap();
        assert_eq!((keyed.auth.clone(), keyed.api_key.as_ref().unwrap().expose()), (AuthStyle::Bearer, "ABSK"));

        let vertex = provider("{ dialect: vertex, project: my-proj, location: us-central1 }", &[]).unwrap();
        assert_eq!(vertex.base_url, "https://us-central1-aiplatform.googleapis.com");
        assert_eq!(vertex.cloud.project.as_deref(), Some("my-proj"));
        let global = provider("{ dialect: vertex, project: my-proj, location: global }", &[]).unwrap();
        assert_eq!(global.base_url, "https://aiplatform.googleapis.com");
        let api = |yaml: &str| provider(yaml, &[]).unwrap().cloud.bedrock_api;
        let claude = "us.anthropic.claude-sonnet-4-5-20250929-v1:0";
        assert!(api("{ dialect: bedrock, region: us-east-1 }").invokes(claude));
        assert!(!api("{ dialect: bedrock, region: us-east-1 }").invokes("amazon.nova-pro-v1:0"));
        assert!(!api("{ dialect: bedrock, region: us-east-1, api: converse }").invokes(claude));
        assert!(
            api("{ dialect: bedrock, region: us-east-1, api: invoke }")
                .invokes("arn:aws:bedrock:us-east-1:1:application-inference-profile/x")
        );
        let own = provider("{ dialect: bedrock, region: us-east-1, base_url: 'http://127.0.0.1:9/' }", &[]).unwrap();
        assert_eq!(own.base_url, "http://127.0.0.1:9");
    }

    #[test]
    fn a_missing_or_misplaced_location_is_named() {
        let e = provider("{ dialect: bedrock }", &[]).unwrap_err();
        assert_eq!(e, "providers.p.region: required for this dialect");
        let e = provider("{ dialect: vertex, project: p }", &[]).unwrap_err();
        assert_eq!(e, "providers.p.location: required for this dialect");
        let e = provider("{ dialect: gemini, region: us-east-1 }", &[]).unwrap_err();
        assert!(e.starts_with("providers.p.region: only for dialects bedrock"), "{e}");
        let e = provider("{ dialect: bedrock, region: 'us-east-1/../x' }", &[]).unwrap_err();
        assert_eq!(e, "providers.p.region: must be letters, digits and dashes");
        let e = provider("{ dialect: bedrock, region: us-east-1, api: messages }", &[]).unwrap_err();
        assert_eq!(e, r#"providers.p.api: "messages" is not one of auto, converse, invoke"#);
        let e = provider("{ dialect: gemini, api: invoke }", &[]).unwrap_err();
        assert!(e.starts_with("providers.p.api: only for dialect bedrock"), "{e}");
        let e = provider("{ dialect: azure }", &[]).unwrap_err();
        assert!(e.contains("expected openai, anthropic, gemini, bedrock, vertex"), "{e}");
    }
}
