//! Where Bedrock's AWS credentials come from (`aws`), and their cache: temporary ones are
//! fetched again when less than five minutes (or half their lifetime, for short ones) remain.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_smithy_types::date_time::{DateTime, Format};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::super::{HttpClient, chain};
use super::health::CredentialHealth;

pub(super) enum Source {
    Static(Credentials),
    /// STS `AssumeRoleWithWebIdentity` with the token in a file (rotated by the kubelet).
    WebIdentity {
        sts: String,
        role_arn: String,
        token_file: String,
        session_name: String,
    },
    /// A container credentials endpoint and the authorization it wants, if any.
    Container {
        url: String,
        token: Option<String>,
        token_file: Option<String>,
    },
    None,
}

impl Source {
    /// The first source of the standard chain the environment configures.
    pub(super) fn from_env(region: &str, var: &dyn Fn(&str) -> Option<String>) -> Self {
        if let (Some(id), Some(secret)) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            return Self::Static(Credentials::new(id, secret, var("AWS_SESSION_TOKEN"), None, "environment"));
        }
        if let (Some(role_arn), Some(token_file)) = (var("AWS_ROLE_ARN"), var("AWS_WEB_IDENTITY_TOKEN_FILE")) {
            let sts = var("AWS_ENDPOINT_URL_STS").unwrap_or_else(|| format!("https://sts.{region}.amazonaws.com"));
            let session_name = var("AWS_ROLE_SESSION_NAME").unwrap_or_else(|| "llm-gateway".into());
            return Self::WebIdentity { sts, role_arn, token_file, session_name };
        }
        let url = var("AWS_CONTAINER_CREDENTIALS_FULL_URI")
            .or_else(|| var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI").map(|rel| format!("http://169.254.170.2{rel}")));
        if let Some(url) = url {
            let (token, token_file) =
                (var("AWS_CONTAINER_AUTHORIZATION_TOKEN"), var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"));
            return Self::Container { url, token, token_file };
        }
        Self::None
    }
}

pub(super) struct Cached {
    source: Source,
    http: HttpClient,
    /// The credentials, when to fetch the next, and when they expire.
    current: Mutex<Option<Current>>,
    pub(super) health: CredentialHealth,
}

struct Current {
    credentials: Credentials,
    refresh_at: Option<Instant>,
    expires_at: Option<Instant>,
}

impl Cached {
    pub(super) fn new(source: Source, http: HttpClient) -> Self {
        let name = match &source {
            Source::Static(_) => "environment",
            Source::WebIdentity { .. } => "web identity",
            Source::Container { .. } => "container credentials",
            Source::None => "none",
        };
        Self { source, http, current: Mutex::new(None), health: CredentialHealth::new(name) }
    }

    /// Credentials that hold for a while yet. When a refresh fails while the current ones
    /// have not expired, they serve on (the failure is reported, `health`).
    pub(super) async fn get(&self) -> Result<Credentials, String> {
        if let Source::Static(credentials) = &self.source {
            return Ok(credentials.clone());
        }
        let mut current = self.current.lock().await;
        let now = Instant::now();
        if let Some(c) = current.as_ref()
            && c.refresh_at.is_none_or(|at| now < at)
        {
            return Ok(c.credentials.clone());
        }
        let (credentials, expires) = match self.fetch().await {
            Ok(fetched) => fetched,
            Err(e) => {
                self.health.failed(&e);
                return match current.as_ref() {
                    Some(c) if c.expires_at.is_some_and(|at| now + Duration::from_secs(5) < at) => {
                        Ok(c.credentials.clone())
                    }
                    _ => Err(e),
                };
            }
        };
        self.health.refreshed();
        let left = expires.map(|at| at.duration_since(SystemTime::now()).unwrap_or_default());
        let refresh_at = left.map(|left| now + left.saturating_sub(Duration::from_secs(300).min(left / 2)));
        let expires_at = left.map(|left| now + left);
        *current = Some(Current { credentials: credentials.clone(), refresh_at, expires_at });
        Ok(credentials)
    }

    async fn fetch(&self) -> Result<(Credentials, Option<SystemTime>), String> {
        let request = match &self.source {
            Source::Static(_) | Source::None => {
                return Err("no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, web identity (AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE), container credentials, or a Bedrock API key in AWS_BEARER_TOKEN_BEDROCK".into());
            }
            Source::WebIdentity { sts, role_arn, token_file, session_name } => {
                let token = std::fs::read_to_string(token_file).map_err(|e| format!("AWS_WEB_IDENTITY_TOKEN_FILE={token_file}: {e}"))?;
                let form = [
                    ("Action", "AssumeRoleWithWebIdentity"),
                    ("Version", "2011-06-15"),
                    ("RoleArn", role_arn),
                    ("RoleSessionName", session_name),
                    ("WebIdentityToken", token.trim()),
                ];
                let body = form.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect::<Vec<_>>().join("&");
                http::Request::post(format!("{}/", sts.trim_end_matches('/')))
                    .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(Full::new(Bytes::from(body)))
            }
            Source::Container { url, token, token_file } => {
                let mut builder = http::Request::get(url.as_str());
                let token = match token_file {
                    Some(file) => Some(std::fs::read_to_string(file).map_err(|e| format!("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE={file}: {e}"))?),
                    None => token.clone(),
                };
                if let Some(token) = token {
                    builder = builder.header(http::header::AUTHORIZATION, token.trim());
                }
                builder.body(Full::new(Bytes::new()))
            }
        }
        .map_err(|e| format!("the credentials request: {e}"))?;
        let response = tokio::time::timeout(Duration::from_secs(30), self.http.request(request))
            .await
            .map_err(|_| "the credentials endpoint did not answer within 30s".to_owned())?
            .map_err(|e| format!("the credentials endpoint: {}", chain(&e)))?;
        let status = response.status();
        let body = response.into_body().collect().await.map_err(|e| format!("the credentials answer: {e}"))?.to_bytes();
        let text = String::from_utf8_lossy(&body);
        if !status.is_success() {
            let text: String = text.chars().take(500).collect();
            return Err(format!("the credentials endpoint answered HTTP {}: {text}", status.as_u16()));
        }
        match &self.source {
            Source::WebIdentity { .. } => from_sts(&text),
            _ => from_container(&body),
        }
    }
}

/// Percent-encodes a form value (everything but unreserved characters).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn expiry(text: &str) -> Result<SystemTime, String> {
    DateTime::from_str(text.trim(), Format::DateTime)
        .ok()
        .and_then(|t| SystemTime::try_from(t).ok())
        .ok_or_else(|| format!("the credentials' expiration {text:?} is not a date"))
}

/// The credentials in STS's XML answer.
fn from_sts(xml: &str) -> Result<(Credentials, Option<SystemTime>), String> {
    let field = |name: &str| -> Result<String, String> {
        let open = format!("<{name}>");
        let start = xml.find(&open).map(|at| at + open.len());
        let end = xml.find(&format!("</{name}>"));
        match (start, end) {
            (Some(start), Some(end)) if start <= end => Ok(xml[start..end]
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&amp;", "&")),
            _ => Err(format!("STS answered without {name}")),
        }
    };
    let expires = expiry(&field("Expiration")?)?;
    let credentials = Credentials::new(
        field("AccessKeyId")?,
        field("SecretAccessKey")?,
        Some(field("SessionToken")?),
        Some(expires),
        "web-identity",
    );
    Ok((credentials, Some(expires)))
}

/// The credentials in a container endpoint's JSON answer.
fn from_container(body: &[u8]) -> Result<(Credentials, Option<SystemTime>), String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Answer {
        access_key_id: String,
        secret_access_key: String,
        #[serde(default)]
        token: Option<String>,
        #[serde(default)]
        expiration: Option<String>,
    }
    let a: Answer = serde_json::from_slice(body).map_err(|e| format!("the container credentials: {e}"))?;
    let expires = a.expiration.as_deref().map(expiry).transpose()?;
    Ok((Credentials::new(a.access_key_id, a.secret_access_key, a.token, expires, "container"), expires))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_takes_the_first_source_configured() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
        };
        let both = env(&[
            ("AWS_ACCESS_KEY_ID", "AKIA"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("AWS_ROLE_ARN", "arn"),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/t"),
        ]);
        assert!(matches!(Source::from_env("us-east-1", &both), Source::Static(_)));
        let irsa = env(&[("AWS_ROLE_ARN", "arn:aws:iam::1:role/r"), ("AWS_WEB_IDENTITY_TOKEN_FILE", "/t")]);
        match Source::from_env("eu-west-3", &irsa) {
            Source::WebIdentity { sts, session_name, .. } => {
                assert_eq!(
                    (sts.as_str(), session_name.as_str()),
                    ("https://sts.eu-west-3.amazonaws.com", "llm-gateway")
                );
            }
            _ => panic!("web identity expected"),
        }
        let pod = env(&[("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/credentials/x")]);
        assert!(
            matches!(Source::from_env("r", &pod), Source::Container { url, .. } if url == "http://169.254.170.2/v2/credentials/x")
        );
        assert!(matches!(Source::from_env("r", &env(&[])), Source::None));
    }

    #[test]
    fn sts_and_container_answers_are_read_with_their_expiry() {
        let xml = "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials>\
            <AccessKeyId>ASIA1</AccessKeyId><SecretAccessKey>se/cr+et</SecretAccessKey>\
            <SessionToken>tok&amp;en</SessionToken><Expiration>2026-12-07T13:00:00Z</Expiration>\
            </Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>";
        let (c, expires) = from_sts(xml).unwrap();
        assert_eq!(
            (c.access_key_id(), c.secret_access_key(), c.session_token()),
            ("ASIA1", "se/cr+et", Some("tok&en"))
        );
        assert_eq!(expires.unwrap().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(), 1_796_648_400);
        let json = br#"{"AccessKeyId":"ASIA2","SecretAccessKey":"s","Token":"t","Expiration":"2026-12-07T13:00:00Z"}"#;
        let (c, expires) = from_container(json).unwrap();
        assert_eq!((c.access_key_id(), expires.is_some()), ("ASIA2", true));
        assert!(from_sts("<Error><Message>denied</Message></Error>").unwrap_err().contains("Expiration"));
    }

    /// XML-escapes text as STS does (the five predefined entities).
    fn escape(text: &str) -> String {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', "&apos;")
    }

    proptest::proptest! {
        /// STS's answer is read by a scan of our own (no XML parser in the tree): whatever
        /// the values hold once escaped, they come back exactly; and no input makes it panic.
        #[test]
        fn sts_answers_round_trip_any_escaped_values(
            key in "\\PC{1,40}",
            secret in "\\PC{1,60}",
            token in "\\PC{0,200}",
            junk in "\\PC{0,80}",
        ) {
            let xml = format!(
                "<AssumeRoleWithWebIdentityResponse>{}<AssumeRoleWithWebIdentityResult><Credentials>\
                 <AccessKeyId>{}</AccessKeyId><SecretAccessKey>{}</SecretAccessKey>\
                 <SessionToken>{}</SessionToken><Expiration>2026-12-07T13:00:00Z</Expiration>\
                 </Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>",
                escape(&junk), escape(&key), escape(&secret), escape(&token),
            );
            let (c, expires) = from_sts(&xml).unwrap();
            proptest::prop_assert_eq!(c.access_key_id(), key.as_str());
            proptest::prop_assert_eq!(c.secret_access_key(), secret.as_str());
            proptest::prop_assert_eq!(c.session_token(), Some(token.as_str()));
            proptest::prop_assert!(expires.is_some());
        }

        #[test]
        fn no_sts_or_container_answer_panics(text in "\\PC{0,300}", bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = from_sts(&text);
            let _ = from_container(&bytes);
            let _ = from_container(text.as_bytes());
        }
    }
}
