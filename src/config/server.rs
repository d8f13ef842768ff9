//! `server`: the listener, body and connection bounds, with the original service's
//! environment overrides (`LLM_GATEWAY_LISTEN`, `PORT`, `LLM_REQUEST_TIMEOUT`).

use std::net::SocketAddr;
use std::time::Duration;

use super::{ConfigError, Env, duration, raw};

pub const DEFAULT_PORT: u16 = 5005;
pub const DEFAULT_MAX_BODY_BYTES: usize = 10 * 1024 * 1024;
/// nginx's keep-alive timeout: longer than the 60 s idle timeout of the common cloud load
/// balancers, so a balancer never sends a request on a connection the gateway is closing.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(75);
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: String,
    pub max_body_bytes: usize,
    pub shutdown_grace: Duration,
    /// A client connection's next request head must arrive within this, from the moment the
    /// connection is ready for it (accepted, or its last answer sent); else it is closed. It
    /// bounds slow-header clients and how long an idle keep-alive connection is kept.
    pub header_read_timeout: Duration,
    pub log_level: String,
    /// Serving threads, each with an event loop of its own.
    pub threads: usize,
    /// A request body must arrive within this of its head, else 408: slow uploads cannot pin
    /// memory.
    pub body_read_timeout: Duration,
    /// A client connection (HTTP/1 or HTTP/2) that starts no request for this long is closed
    /// (gracefully: what it has in flight finishes).
    pub idle_timeout: Duration,
    /// Requests in flight at once; past it, a 503 with `Retry-After` (`None`: no cap).
    pub max_in_flight: Option<usize>,
    /// Where `/metrics` and `/sessions` are served instead of the API port (`None`: on it).
    pub management_listen: Option<String>,
}

/// The server section, and the total request timeout the original service's
/// `LLM_REQUEST_TIMEOUT` sets for every provider (`None`: unset).
pub(super) fn settings(raw: &raw::RawServer, env: &dyn Env) -> Result<(ServerSettings, Option<Duration>), ConfigError> {
    let err = |path: String, msg: String| ConfigError(format!("{path}: {msg}"));
    let mut listen = raw.listen.clone().unwrap_or_else(|| format!("0.0.0.0:{DEFAULT_PORT}"));
    if let Some(l) = env.var("LLM_GATEWAY_LISTEN") {
        listen = l;
    }
    if let Some(port) = env.var("PORT") {
        let port: u16 = port.parse().map_err(|_| err("PORT".into(), format!("{port:?} is not a port number")))?;
        let host = listen.rsplit_once(':').map(|(h, _)| h.to_owned()).unwrap_or_else(|| "0.0.0.0".into());
        listen = format!("{host}:{port}");
    }
    if listen.parse::<SocketAddr>().is_err()
        && listen.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()).is_none()
    {
        return Err(err("server.listen".into(), format!("{listen:?} is not HOST:PORT")));
    }
    let max_body_bytes = match raw.max_body_bytes {
        Some(0) => {
            return Err(err("server.max_body_bytes".into(), "must be greater than 0".into()));
        }
        Some(n) => usize::try_from(n).map_err(|_| err("server.max_body_bytes".into(), "too large".into()))?,
        None => DEFAULT_MAX_BODY_BYTES,
    };
    let total_override = match env.var("LLM_REQUEST_TIMEOUT") {
        Some(v) => Some(duration::parse(&v).map_err(|e| err("LLM_REQUEST_TIMEOUT".into(), e))?),
        None => None,
    };
    let threads = match raw.threads {
        Some(0) => return Err(err("server.threads".into(), "must be at least 1".into())),
        Some(n) if n > 1024 => return Err(err("server.threads".into(), "must be at most 1024".into())),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
    };
    let header_read_timeout = match raw.header_read_timeout {
        Some(d) if d.is_zero() => {
            return Err(err("server.header_read_timeout".into(), "must be greater than 0".into()));
        }
        Some(d) => d,
        None => DEFAULT_HEADER_READ_TIMEOUT,
    };
    let positive = |value: Option<Duration>, name: &str, default: Duration| match value {
        Some(d) if d.is_zero() => Err(err(format!("server.{name}"), "must be greater than 0".into())),
        Some(d) => Ok(d),
        None => Ok(default),
    };
    let body_read_timeout = positive(raw.body_read_timeout, "body_read_timeout", DEFAULT_BODY_READ_TIMEOUT)?;
    let idle_timeout = positive(raw.idle_timeout, "idle_timeout", DEFAULT_IDLE_TIMEOUT)?;
    if let Some(management) = &raw.management_listen
        && management.parse::<SocketAddr>().is_err()
    {
        return Err(err("server.management_listen".into(), format!("{management:?} is not IP:PORT")));
    }
    if raw.max_in_flight == Some(0) {
        return Err(err("server.max_in_flight".into(), "must be at least 1".into()));
    }
    let settings = ServerSettings {
        listen,
        threads,
        max_body_bytes,
        shutdown_grace: raw.shutdown_grace.unwrap_or(Duration::from_secs(30)),
        header_read_timeout,
        log_level: raw.log_level.clone().unwrap_or_else(|| "info".into()),
        body_read_timeout,
        idle_timeout,
        max_in_flight: raw.max_in_flight,
        management_listen: raw.management_listen.clone(),
    };
    Ok((settings, total_override))
}
