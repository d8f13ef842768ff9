//! AWS request signing for Bedrock: Signature Version 4 by the official `aws-sigv4` crate,
//! with the credentials of the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`), read when the provider is built.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use bytes::Bytes;
use http_body_util::Full;

use crate::api::ErrorBody;
use crate::error::GatewayError;

pub(in crate::upstream) struct Signer {
    region: String,
    credentials: Option<Credentials>,
}

impl Signer {
    pub(in crate::upstream) fn from_env(region: String) -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let credentials = match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
            (Some(id), Some(secret)) => {
                Some(Credentials::new(id, secret, var("AWS_SESSION_TOKEN"), None, "environment"))
            }
            _ => None,
        };
        Self { region, credentials }
    }

    /// Signs `request` (whose body is `body`) for the `bedrock` service in the region.
    pub(in crate::upstream) async fn sign(
        &self,
        request: &mut http::Request<Full<Bytes>>,
        body: &[u8],
        deployment: &str,
    ) -> Result<(), GatewayError> {
        let failed = |detail: String| credentials_error(deployment, &detail);
        let credentials = self.credentials.clone().ok_or_else(|| {
            failed("no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a Bedrock API key in AWS_BEARER_TOKEN_BEDROCK".into())
        })?;
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
