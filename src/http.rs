//! The pooled HTTP(S) client the upstreams and the OTLP trace exporter share: rustls with the
//! platform's trust roots, HTTP/1.1 or HTTP/2 by ALPN (or HTTP/2 only, for gRPC).

pub(crate) mod h1;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

pub(crate) type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A pooled HTTP client over rustls (the platform's trust roots): HTTP/1.1 or HTTP/2 by ALPN, or
/// HTTP/2 only (gRPC).
pub(crate) fn http_client(connect_timeout: Duration, http2_only: bool) -> Result<HttpClient, String> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let tls = hyper_rustls::HttpsConnectorBuilder::new()
        .try_with_platform_verifier()
        .map_err(|e| format!("TLS trust roots: {e}"))?
        .https_or_http();
    let tls = if http2_only {
        tls.enable_http2().wrap_connector(http)
    } else {
        tls.enable_all_versions().wrap_connector(http)
    };
    Ok(Client::builder(TokioExecutor::new())
        .http2_only(http2_only)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(tls))
}

/// The error's causes, without any that name an address.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = Vec::new();
    let mut source = Some(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !text.contains("://") && parts.last() != Some(&text) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}
