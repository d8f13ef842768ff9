//! The one error type a request can end in: who caused it, whether a retry may help, and how it
//! looks on the wire (OpenAI's error body, the right status) and in metrics (a short label).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::api::openai::default_kind_for;
use crate::api::ratelimit::{self, RateHeaders};
use crate::api::{ErrorBody, anthropic};

/// Who caused a failure: the router and the breaker act on upstream failures only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    Client,
    Upstream,
    Gateway,
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{message}")]
    BadRequest { message: String, param: Option<String> },
    /// A Responses request's `previous_response_id` is not stored (OpenAI's 400, its own code).
    #[error("Previous response with id '{0}' not found.")]
    PreviousResponseNotFound(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    ModelNotAllowed(String),
    #[error("{0}")]
    ModelNotFound(String),
    /// The prompt does not fit any deployment's context window.
    #[error("{0}")]
    ContextLength(String),
    /// Every deployment of the model is unavailable (breakers open): answered at once.
    #[error("{message}")]
    Unavailable { message: String, retry_after_secs: Option<u64> },
    /// Every deployment is cooling down after upstream 429s.
    #[error("{message}")]
    CoolingDown { message: String, retry_after_secs: u64 },
    /// Over a rate, concurrency or budget limit of the caller's key, team or model.
    #[error("{message}")]
    RateLimited {
        message: String,
        /// Which limit (`rpm`, `tpm`, `max_concurrent`, `daily_tokens`, ...).
        reason: &'static str,
        /// A budget ran out (`insufficient_quota`) rather than a rate.
        quota: bool,
        retry_after_ms: Option<u64>,
        headers: Box<RateHeaders>,
    },
    /// Shared state (limits, admin-made keys) cannot be read: Valkey is unreachable and the
    /// policy says to refuse rather than guess.
    #[error("{0}")]
    StoreUnavailable(String),
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The request body did not arrive within the server's body read timeout.
    #[error("the request body did not arrive within {after_ms} ms")]
    RequestTimeout { after_ms: u128 },
    /// The gateway is at its cap of requests in flight: answered at once, to be retried.
    #[error("{0}")]
    Overloaded(String),
    /// The upstream answered with an error status; its body is normalised to OpenAI's shape.
    #[error("{}", body.error.message)]
    UpstreamStatus { status: StatusCode, body: ErrorBody, retry_after: Option<String> },
    #[error("upstream {deployment} is unreachable: {detail}")]
    UpstreamUnreachable { deployment: String, detail: String },
    #[error("upstream {deployment} did not answer within {after_ms} ms ({phase})")]
    UpstreamTimeout { deployment: String, phase: &'static str, after_ms: u128 },
    #[error("upstream {deployment} sent an invalid response: {detail}")]
    UpstreamProtocol { deployment: String, detail: String },
    #[error("{0}")]
    Internal(String),
    /// Usage metering cannot take more events (its outbox is at the disk cap and the policy is
    /// to refuse): answered at once, so that nothing is served unbilled.
    #[error("{0}")]
    MeteringFull(String),
}

impl GatewayError {
    pub fn bad_request(message: impl Into<String>, param: Option<&str>) -> Self {
        Self::BadRequest { message: message.into(), param: param.map(str::to_owned) }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } | Self::PreviousResponseNotFound(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::ModelNotAllowed(_) => StatusCode::FORBIDDEN,
            Self::ModelNotFound(_) => StatusCode::NOT_FOUND,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::ContextLength(_) => StatusCode::BAD_REQUEST,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::CoolingDown { .. } | Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            // Anthropic's 529 "overloaded" is outside what OpenAI clients know: their 503.
            Self::UpstreamStatus { status, .. } if status.as_u16() == 529 => StatusCode::SERVICE_UNAVAILABLE,
            Self::UpstreamStatus { status, .. } => *status,
            Self::UpstreamUnreachable { .. } | Self::UpstreamProtocol { .. } => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::MeteringFull(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn cause(&self) -> Cause {
        match self {
            Self::BadRequest { .. }
            | Self::PreviousResponseNotFound(_)
            | Self::Unauthorized(_)
            | Self::ModelNotAllowed(_)
            | Self::ModelNotFound(_)
            | Self::PayloadTooLarge { .. }
            | Self::RequestTimeout { .. }
            | Self::RateLimited { .. }
            | Self::ContextLength(_) => Cause::Client,
            Self::UpstreamStatus { status, .. } if status.is_client_error() && status.as_u16() != 429 => Cause::Client,
            Self::UpstreamStatus { .. }
            | Self::UpstreamUnreachable { .. }
            | Self::UpstreamTimeout { .. }
            | Self::UpstreamProtocol { .. } => Cause::Upstream,
            Self::Internal(_)
            | Self::Unavailable { .. }
            | Self::CoolingDown { .. }
            | Self::MeteringFull(_)
            | Self::Overloaded(_)
            | Self::StoreUnavailable(_) => Cause::Gateway,
        }
    }

    /// Whether another deployment might succeed where this attempt failed (before any byte
    /// reached the client): connect errors, timeouts, 429 and 5xx — never a client error.
    pub fn retryable(&self) -> bool {
        match self {
            Self::UpstreamStatus { status, .. } => status.as_u16() == 429 || status.is_server_error(),
            Self::UpstreamUnreachable { .. } | Self::UpstreamTimeout { .. } | Self::UpstreamProtocol { .. } => true,
            _ => false,
        }
    }

    /// A short, bounded label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::BadRequest { .. } | Self::PreviousResponseNotFound(_) => "bad_request",
            Self::Unauthorized(_) => "unauthorized",
            Self::ModelNotAllowed(_) => "model_not_allowed",
            Self::ModelNotFound(_) => "model_not_found",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::RequestTimeout { .. } => "request_timeout",
            Self::Overloaded(_) => "overloaded",
            Self::ContextLength(_) => "context_length_exceeded",
            Self::Unavailable { .. } => "unavailable",
            Self::CoolingDown { .. } => "cooling_down",
            Self::RateLimited { .. } => "rate_limited",
            Self::StoreUnavailable(_) => "store_unavailable",
            Self::UpstreamStatus { .. } => "upstream_status",
            Self::UpstreamUnreachable { .. } => "upstream_unreachable",
            Self::UpstreamTimeout { .. } => "upstream_timeout",
            Self::UpstreamProtocol { .. } => "upstream_protocol",
            Self::Internal(_) => "internal",
            Self::MeteringFull(_) => "metering_full",
        }
    }

    /// The OpenAI error body for this failure.
    pub fn body(&self) -> ErrorBody {
        let message = self.to_string();
        match self {
            Self::BadRequest { param, .. } => ErrorBody::new(message, "invalid_request_error", param.clone(), None),
            Self::PreviousResponseNotFound(_) => ErrorBody::new(
                message,
                "invalid_request_error",
                Some("previous_response_id".into()),
                Some("previous_response_not_found"),
            ),
            Self::Unauthorized(_) => ErrorBody::new(message, "invalid_request_error", None, Some("invalid_api_key")),
            Self::ModelNotAllowed(_) => {
                ErrorBody::new(message, "permission_error", Some("model".into()), Some("model_not_allowed"))
            }
            Self::ModelNotFound(_) => {
                ErrorBody::new(message, "invalid_request_error", Some("model".into()), Some("model_not_found"))
            }
            Self::PayloadTooLarge { .. } => {
                ErrorBody::new(message, "invalid_request_error", None, Some("request_too_large"))
            }
            Self::RequestTimeout { .. } => {
                ErrorBody::new(message, "invalid_request_error", None, Some("request_timeout"))
            }
            Self::Overloaded(_) => {
                ErrorBody::new(message, "service_unavailable_error", None, Some("gateway_overloaded"))
            }
            Self::ContextLength(_) => ErrorBody::new(
                message,
                "invalid_request_error",
                Some("messages".into()),
                Some("context_length_exceeded"),
            ),
            Self::Unavailable { .. } => {
                ErrorBody::new(message, "service_unavailable_error", Some("model".into()), Some("model_unavailable"))
            }
            Self::CoolingDown { .. } => {
                ErrorBody::new(message, "rate_limit_error", Some("model".into()), Some("rate_limit_exceeded"))
            }
            Self::RateLimited { quota: true, reason: "daily_spend" | "monthly_spend", .. } => {
                ErrorBody::new(message, "insufficient_quota", None, Some("budget_exceeded"))
            }
            Self::RateLimited { quota: true, .. } => {
                ErrorBody::new(message, "insufficient_quota", None, Some("insufficient_quota"))
            }
            Self::RateLimited { .. } => ErrorBody::new(message, "rate_limit_error", None, Some("rate_limit_exceeded")),
            Self::StoreUnavailable(_) => {
                ErrorBody::new(message, "service_unavailable_error", None, Some("store_unavailable"))
            }
            Self::UpstreamStatus { body, .. } => body.clone(),
            Self::UpstreamUnreachable { .. } | Self::UpstreamProtocol { .. } => {
                ErrorBody::new(message, "upstream_error", None, Some(self.label()))
            }
            Self::UpstreamTimeout { .. } => ErrorBody::new(message, "timeout_error", None, Some("upstream_timeout")),
            Self::Internal(_) => ErrorBody::new(message, default_kind_for(500), None, None),
            Self::MeteringFull(_) => {
                ErrorBody::new(message, "service_unavailable_error", None, Some("metering_backlog"))
            }
        }
    }
}

impl GatewayError {
    /// The status an Anthropic client sees: the upstream's own (529 included), else ours.
    pub fn anthropic_status(&self) -> StatusCode {
        match self {
            Self::UpstreamStatus { status, .. } => *status,
            _ => self.status(),
        }
    }

    /// The Anthropic error body, `{"type":"error","error":{"type","message"}}`.
    pub fn anthropic_body(&self) -> anthropic::ErrorBody {
        anthropic::ErrorBody::from_openai(self.anthropic_status().as_u16(), &self.body())
    }

    /// The response on Anthropic's routes (`/v1/messages`).
    pub fn into_anthropic_response(self) -> Response {
        let body = serde_json::to_vec(&self.anthropic_body()).unwrap_or_default();
        self.with_headers(self.anthropic_status(), body)
    }

    fn with_headers(&self, status: StatusCode, body: Vec<u8>) -> Response {
        let mut response = (status, [(http::header::CONTENT_TYPE, "application/json")], body).into_response();
        let retry_after = match self {
            Self::UpstreamStatus { retry_after: Some(value), .. } => http::HeaderValue::from_str(value).ok(),
            Self::Unavailable { retry_after_secs: Some(secs), .. }
            | Self::CoolingDown { retry_after_secs: secs, .. } => Some(http::HeaderValue::from(*secs)),
            Self::MeteringFull(_) => Some(http::HeaderValue::from_static("5")),
            Self::Overloaded(_) => Some(http::HeaderValue::from_static("1")),
            _ => None,
        };
        if let Some(value) = retry_after {
            response.headers_mut().insert(http::header::RETRY_AFTER, value);
        }
        if let Self::RateLimited { retry_after_ms, headers, .. } = &self {
            headers.apply(response.headers_mut());
            if let Some(ms) = retry_after_ms {
                ratelimit::apply_retry_after(response.headers_mut(), *ms);
            }
        }
        if matches!(self, Self::StoreUnavailable(_)) {
            response.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from(1));
        }
        // Answered before the request body was read: the connection cannot be reused safely.
        if matches!(self, Self::Unauthorized(_) | Self::PayloadTooLarge { .. } | Self::RequestTimeout { .. }) {
            response.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
        }
        response
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.body()).unwrap_or_default();
        self.with_headers(self.status(), body)
    }
}
