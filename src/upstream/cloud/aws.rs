//! AWS request signing for Bedrock: Signature Version 4 by the official `aws-sigv4` crate,
//! with credentials from the standard chain, in its order: the environment
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`); web identity
//! (`AWS_ROLE_ARN` + `AWS_WEB_IDENTITY_TOKEN_FILE`, EKS IRSA: STS `AssumeRoleWithWebIdentity`,
//! `AWS_ENDPOINT_URL_STS` honoured); container credentials (`AWS_CONTAINER_CREDENTIALS_FULL_URI`
//! or `_RELATIVE_URI`, with `AWS_CONTAINER_AUTHORIZATION_TOKEN[_FILE]`: ECS, EKS Pod Identity).
//! Temporary credentials are cached and fetched again before they expire (`creds`).
//!
//! Why not `aws-config`: resolved against this tree (`cargo tree`, aws-config 1.x with only
//! `rt-tokio` and its default HTTPS client), it adds 14 crates — the generated `aws-sdk-sts`,
//! `aws-smithy-runtime` with its own HTTP client, `-xml`, `-query`, `-json`, `aws-runtime`,
//! `aws-types`, `xmlparser`, … — for two small exchanges (STS and the container endpoint),
//! done here with the gateway's HTTP client (`creds`, its answer scan under property tests).

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use http_body_util::Full;

use super::super::HttpClient;
use super::creds::{Cached, Source};
use crate::api::ErrorBody;
use crate::error::GatewayError;

pub(in crate::upstream) struct Signer {
    region: String,
    pub(super) credentials: Cached,
}

impl Signer {
    pub(in crate::upstream) fn from_env(region: String, http: HttpClient) -> Self {
        let source = Source::from_env(&region, &|name| std::env::var(name).ok().filter(|v| !v.is_empty()));
        Self { region, credentials: Cached::new(source, http) }
    }

    /// Signs `request` (whose body is `body`) for the `bedrock` service in the region.
    pub(in crate::upstream) async fn sign(
        &self,
        request: &mut http::Request<Full<Bytes>>,
        body: &[u8],
        deployment: &str,
    ) -> Result<(), GatewayError> {
        let failed = |detail: String| credentials_error(deployment, &detail);
        let credentials: Credentials = self.credentials.get().await.map_err(failed)?;
        let identity: Identity = credentials.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("bedrock")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| failed(format!("SigV4 parameters: {e}")))?
            .into();
        let uri = request.uri().to_string();
        let headers = request.headers().iter().filter_map(|(n, v)| v.to_str().ok().map(|v| (n.as_str(), v)));
        let signable = SignableRequest::new("POST", &uri, headers, SignableBody::Bytes(body))
            .map_err(|e| failed(format!("SigV4: {e}")))?;
        let (instructions, _) = sign(signable, &params).map_err(|e| failed(format!("SigV4: {e}")))?.into_parts();
        instructions.apply_to_request_http1x(request);
        Ok(())
    }
}

/// The gateway could not get or use its cloud credentials: a 502 that says so.
pub(in crate::upstream) fn credentials_error(deployment: &str, detail: &str) -> GatewayError {
    GatewayError::UpstreamStatus {
        status: http::StatusCode::BAD_GATEWAY,
        body: ErrorBody::new(
            format!("The gateway's credentials for deployment {deployment} are unavailable: {detail}"),
            "server_error",
            None,
            Some("upstream_credentials"),
        ),
        retry_after: None,
    }
}
