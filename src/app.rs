//! Composition: the one place that builds the stack from a validated `Config`, top to bottom.
//!
//! | stage      | reads                                   | writes                              |
//! |------------|-----------------------------------------|-------------------------------------|
//! | server     | socket, `x-request-id`                  | `RequestId`, response `x-request-id`|
//! | ingress    | route (`API_ROUTES`); body (bounded)    | the body, when the pipeline asks    |
//! | pipeline   | endpoint, headers, body                 | `RequestCtx`, `ParsedRequest`       |
//! | auth       | `Authorization` / `x-api-key`; JWKS     | `Principal`                         |
//! | limits     | principal, model, token estimate        | `Reservation` (+ `x-ratelimit-*`)   |
//! | cache      | principal, resolved model, body, headers| `CacheStatus`; a hit answers here   |
//! | router     | client model, principal's team policy   | `Resolved` group, `Plan`; failover  |
//! | adapter    | parsed request, deployment              | upstream body; rewritten chunks     |
//! | (cli)      | a session from the provider's pool      | OpenAI-shaped `UpstreamResponse`    |
//! | upstream   | provider (URL, key, timeouts)           | `UpstreamResponse`                  |
//! | stream     | upstream body                           | client frames; one `StreamEnd`      |
//! | observers  | `RequestCtx` + `Outcome`                | the request log line, metrics       |
//! | metering   | `RequestCtx` + `Outcome` (usage, text)  | CloudEvents → outbox → OpenMeter    |
//! | cache fill | the answer (whole, or frames + end)     | exact key, semantic entry, log      |
//! | observers  | `RequestCtx` + `Outcome`                | log line, metrics, limits settlement|

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::State;
use axum::response::Response;
use axum::routing::{MethodRouter, any, get, post};

use crate::auth::Authenticator;
use crate::auth::keys::KeyStore;
use crate::cache::Cache;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::config::limits::ValkeyDownPolicy;
use crate::ctx::Endpoint;
use crate::ctx::{LocalCount, Observer};
use crate::error::GatewayError;
use crate::ingress::{self, Ingress, RequestId};
use crate::kv::Kv;
use crate::limits::{Limiter, Settler};
use crate::metering;
use crate::pipeline::{self, Gateway};
use crate::router::Router;
use crate::server;
use crate::telemetry::RequestLog;
use crate::telemetry::metrics::{Metrics, RequestMetrics};
use crate::upstream::Upstreams;

/// Background work (active health checks, CLI session pool supervisors, the metering
/// pipeline), stopped when dropped (CLI sessions are then killed as their handles drop) or,
/// politely, by `shutdown`.
pub struct Background {
    tasks: tokio::task::JoinSet<()>,
    supervisors: tokio::task::JoinSet<()>,
    gateway: Arc<Gateway>,
    metering: Option<metering::Running>,
    metering_flush: std::time::Duration,
    request_log: Option<crate::request_log::Running>,
}

impl Background {
    /// Stops the background work: CLI sessions get end of input, then SIGKILL after a grace;
    /// metering flushes what it holds (to disk at least, to OpenMeter within its flush timeout).
    pub async fn shutdown(mut self) {
        for pool in self.gateway.upstreams.cli_pools().iter() {
            pool.shutdown().await;
        }
        // Supervisors exit by themselves once their reaping is done; bounded all the same.
        let supervisors = async { while self.supervisors.join_next().await.is_some() {} };
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), supervisors).await;
        self.supervisors.shutdown().await;
        if let Some(metering) = self.metering.take() {
            metering.shutdown(self.metering_flush).await;
        }
        if let Some(request_log) = self.request_log.take() {
            request_log.shutdown(std::time::Duration::from_secs(5)).await;
        }
        self.tasks.shutdown().await;
        // Allowances of shared limits go back, so the limits' budgets do not lose them.
        self.gateway.limits.shutdown().await;
    }

    pub fn len(&self) -> usize {
        self.tasks.len() + self.supervisors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The HTTP application: axum's router for every route, and the gateway itself, which
/// `server` calls directly for the proxied endpoints (see `App::proxied`).
#[derive(Clone)]
pub struct App {
    pub router: axum::Router,
    /// The management listener's routes (`server.management_listen`), when it has one.
    pub management: Option<axum::Router>,
    pub(crate) ingress: Arc<Ingress>,
}

impl App {
    /// The endpoint `POST path` proxies, for the paths served without the router: the
    /// requests a gateway mostly gets skip axum's routing, its handler extractors and the boxed
    /// service each route is, and go straight to `ingress::handle`. The router has the same
    /// routes (from the same table, `API_ROUTES`), so what it answers for them is the same.
    pub(crate) fn proxied(path: &str) -> Option<Endpoint> {
        API_ROUTES.iter().find_map(|(route, serve)| match serve {
            Serve::Proxy(endpoint) if *route == path => Some(*endpoint),
            _ => None,
        })
    }
}

/// What answers one route of the API listener.
#[derive(Clone, Copy)]
enum Serve {
    /// A proxied endpoint, `POST` only: the fast path's (`App::call`), and the router's alike.
    Proxy(Endpoint),
    /// An axum handler, with its method (or methods).
    Handler(fn() -> MethodRouter<Arc<Ingress>>),
}

/// The API listener's routes, one line each: `App::call`'s fast path and axum's router are both
/// made from it. (The operations routes — `/health`, `/ready`, `/metrics`, `/sessions` — are
/// added in `build_with`: which listener has them depends on the configuration.)
const API_ROUTES: &[(&str, Serve)] = &[
    ("/v1/chat/completions", Serve::Proxy(Endpoint::ChatCompletions)),
    ("/v1/completions", Serve::Proxy(Endpoint::Completions)),
    ("/v1/embeddings", Serve::Proxy(Endpoint::Embeddings)),
    ("/v1/messages", Serve::Proxy(Endpoint::Messages)),
    ("/v1/messages/count_tokens", Serve::Handler(|| post(ingress::count_tokens))),
    ("/v1/responses", Serve::Proxy(Endpoint::Responses)),
    ("/v1/responses/input_tokens", Serve::Handler(|| post(ingress::responses::input_tokens))),
    (
        "/v1/responses/{id}",
        Serve::Handler(|| get(ingress::responses::get_response).delete(ingress::responses::delete_response)),
    ),
    ("/v1/responses/{id}/input_items", Serve::Handler(|| get(ingress::responses::input_items))),
    ("/v1/models", Serve::Handler(|| get(ingress::list_models))),
    ("/v1/models/{*model}", Serve::Handler(|| get(ingress::get_model))),
    ("/v1/{*rest}", Serve::Handler(|| any(ingress::unknown_route))),
    ("/quota", Serve::Handler(|| get(ingress::quota::quota))),
    ("/admin/keys", Serve::Handler(|| post(ingress::admin::create_key).get(ingress::admin::list_keys))),
    ("/admin/keys/{id}", Serve::Handler(|| get(ingress::admin::get_key).delete(ingress::admin::revoke_key))),
    // Claude Code's connectivity check before its first request (`HEAD /api/hello`).
    ("/api/hello", Serve::Handler(|| get(|| async { http::StatusCode::OK }))),
];

/// Axum's router for `API_ROUTES`.
fn api_router(ingress: Arc<Ingress>) -> axum::Router {
    let routes = API_ROUTES.iter().fold(axum::Router::new(), |router, (path, serve)| {
        let handler = match *serve {
            Serve::Proxy(endpoint) => post(move |ingress, request| proxy(endpoint, ingress, request)),
            Serve::Handler(handler) => handler(),
        };
        router.route(path, handler)
    });
    routes.with_state(ingress)
}

/// A proxied endpoint's request that came through the router rather than the fast path: the
/// same handler, with the request id the server stage put on it.
async fn proxy(endpoint: Endpoint, State(ingress): State<Arc<Ingress>>, request: axum::extract::Request) -> Response {
    // Taken apart rather than extracted: the headers are moved, not copied.
    let (mut parts, body) = request.into_parts();
    let id = match parts.extensions.remove::<RequestId>() {
        Some(RequestId(id)) => id,
        None => server::request_id_of(&parts.headers),
    };
    let peer = parts.extensions.get::<server::Peer>().map(|p| p.0);
    ingress::handle(ingress, id, endpoint, parts.uri.query().map(Box::from), peer, parts.headers, body).await
}

pub type Handled = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

pin_project_lite::pin_project! {
    /// A request's answer, from the gateway or the router.
    #[project = AnswerProj]
    pub enum Answer {
        Proxied { #[pin] inner: server::RequestIdFuture<Handled> },
        Routed { #[pin] inner: axum::routing::future::RouteFuture<Infallible> },
    }
}

impl Future for Answer {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AnswerProj::Proxied { inner } => inner.poll(cx),
            AnswerProj::Routed { inner } => inner.poll(cx),
        }
    }
}

/// The application as the server's service (what `server::serve` serves): a proxied endpoint's
/// request goes straight to the gateway (`App::proxied`), any other to the router, as axum's body.
impl<B: server::ServedBody> hyper::service::Service<http::Request<B>> for App {
    type Response = Response;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, request: http::Request<B>) -> Answer {
        if request.method() == http::Method::POST
            && let Some(endpoint) = App::proxied(request.uri().path())
        {
            let (parts, body) = request.into_parts();
            let id = server::request_id_of(&parts.headers);
            let peer = parts.extensions.get::<server::Peer>().map(|p| p.0);
            let handled = crate::ingress::handle(
                self.ingress.clone(),
                id.clone(),
                endpoint,
                parts.uri.query().map(Box::from),
                peer,
                parts.headers,
                body.into_axum(),
            );
            let inner: Handled = Box::pin(async move { Ok(handled.await) });
            return Answer::Proxied { inner: server::RequestIdFuture { inner, id: Some(id) } };
        }
        Answer::Routed { inner: tower::Service::call(&mut self.router.clone(), request.map(B::into_axum)) }
    }
}

/// Builds the HTTP application for `config` and starts its background tasks (call inside the
/// runtime).
pub fn build(config: &Config) -> Result<(App, Background), GatewayError> {
    build_with(config, Arc::new(SystemClock))
}

/// `build` with the wall clock that decides budget windows and key expiry (tests move it).
pub fn build_with(config: &Config, clock: Arc<dyn Clock>) -> Result<(App, Background), GatewayError> {
    let known_models = config.models.keys().chain(config.aliases.keys()).cloned().collect();
    let deployments = config.models.values().flat_map(|m| m.deployments.iter().map(|d| d.id.clone())).collect();
    let mut metrics = Metrics::new(known_models, config.telemetry.team_label).with_deployments(deployments);
    let prices = Arc::new(crate::spend::Prices::new(config));
    // The local count of requests without usage: what budgets are charged, spend counts and
    // the request log records.
    let count: Arc<dyn LocalCount> =
        Arc::new(crate::metering::local::Counter::new(config).map_err(GatewayError::Internal)?);
    let sinks = Sinks::start(config, &mut metrics, &prices, &count)?;
    let mut observers = sinks.observers;
    let metrics = Arc::new(metrics);
    observers.extend([Arc::new(RequestLog) as Arc<dyn Observer>, Arc::new(RequestMetrics(metrics.clone()))]);
    observers.push(Arc::new(crate::spend::SpendObserver {
        prices: prices.clone(),
        metrics: sinks.spend_metrics,
        labels: metrics.clone(),
        count: count.clone(),
    }));
    let cache = match &config.cache {
        Some(settings) => {
            Some(Arc::new(Cache::new(settings, config).map_err(|e| GatewayError::Internal(e.to_string()))?))
        }
        None => None,
    };
    let kv = match &config.valkey {
        Some(settings) => Some(Kv::new(settings).map_err(|e| GatewayError::Internal(format!("valkey: {e}")))?),
        None => None,
    };
    let limits = Arc::new(Limiter::new(config.limits.clone(), kv.clone(), clock.clone(), metrics.clone()));
    // Settles each request's reservation when it ends (refund or charge the difference).
    observers.push(Arc::new(Settler::new(limits.clone(), count)));
    let fail_open = config.limits.on_valkey_down == ValkeyDownPolicy::FailOpen;
    let key_store = config.admin.as_ref().map(|_| {
        Arc::new(KeyStore::new(
            kv.clone(),
            config.auth.key_cache_ttl,
            crate::auth::teams(config),
            clock.clone(),
            fail_open,
        ))
    });
    let gateway = Arc::new(Gateway {
        auth: Authenticator::new(config, clock, key_store),
        router: Router::new(config),
        upstreams: Upstreams::new(config)?,
        observers,
        prices,
        cache: cache.clone(),
        limits: limits.clone(),
        responses: Arc::new(crate::responses_store::ResponsesStore::new(&config.responses, kv.clone())),
        in_flight: Default::default(),
        max_in_flight: config.server.max_in_flight,
    });
    let ingress = Arc::new(Ingress {
        gateway: gateway.clone(),
        max_body_bytes: config.server.max_body_bytes,
        body_read_timeout: config.server.body_read_timeout,
        body_gate: Default::default(),
        started_unix: pipeline::unix_now(),
    });
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(cache) = &cache {
        cache.spawn_background(&mut tasks);
    }
    limits.spawn_background(&mut tasks);
    if let Some(verifier) = gateway.auth.jwt() {
        tasks.spawn(verifier.clone().keep_fresh());
    }
    spawn_health_checks(config, &gateway, &mut tasks);
    let mut supervisors = tokio::task::JoinSet::new();
    for pool in gateway.upstreams.cli_pools().iter() {
        supervisors.spawn(pool.clone().supervise());
    }
    let scrape_state = (gateway.clone(), metrics, kv, sinks.request_log_metrics);
    let (router, management) = routes(config, &ingress, &gateway, scrape_state);
    let metering_flush = config.metering.as_ref().map(|m| m.flush_timeout).unwrap_or_default();
    let app = App { router, ingress, management };
    let (metering, request_log) = (sinks.metering, sinks.request_log);
    Ok((app, Background { tasks, supervisors, gateway, metering, metering_flush, request_log }))
}

/// Where finished requests go besides the logs and metrics: metering's outbox, the request
/// log, and spend's counters, each started when configured.
struct Sinks {
    observers: Vec<Arc<dyn Observer>>,
    metering: Option<metering::Running>,
    request_log: Option<crate::request_log::Running>,
    request_log_metrics: Option<Arc<crate::request_log::Metrics>>,
    spend_metrics: Arc<crate::telemetry::metrics::spend::SpendMetrics>,
}

impl Sinks {
    fn start(
        config: &Config,
        metrics: &mut Metrics,
        prices: &Arc<crate::spend::Prices>,
        count: &Arc<dyn LocalCount>,
    ) -> Result<Self, GatewayError> {
        let mut sinks = Sinks {
            observers: Vec::new(),
            metering: None,
            request_log: None,
            request_log_metrics: None,
            spend_metrics: Arc::new(crate::telemetry::metrics::spend::SpendMetrics::new()),
        };
        if let Some(settings) = &config.metering {
            let metering_metrics = Arc::new(crate::telemetry::metrics::MeteringMetrics::default());
            let (observer, running) = metering::start(config, settings, metering_metrics.clone())
                .map_err(|e| GatewayError::Internal(e.to_string()))?;
            metrics.metering = Some(metering_metrics);
            sinks.observers.push(observer);
            sinks.metering = Some(running);
        }
        if let Some(settings) = &config.request_log {
            let log_metrics = Arc::new(crate::request_log::Metrics::default());
            let (observer, running) = crate::request_log::start(settings, log_metrics.clone(), count.clone())
                .map_err(|e| GatewayError::Internal(e.to_string()))?;
            (sinks.request_log, sinks.request_log_metrics) = (Some(running), Some(log_metrics));
            sinks.observers.push(observer);
        }
        crate::spend::warn_unpriced(prices, &sinks.spend_metrics);
        metrics.spend = Some(sinks.spend_metrics.clone());
        Ok(sinks)
    }
}

/// Each provider's periodic health check, marking its deployments up or down.
fn spawn_health_checks(config: &Config, gateway: &Arc<Gateway>, tasks: &mut tokio::task::JoinSet<()>) {
    for provider in config.providers.values() {
        if let Some(check) = provider.health_check.clone() {
            let gateway = gateway.clone();
            let provider = provider.clone();
            tasks.spawn(async move {
                let mut ticker = tokio::time::interval(check.interval);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticker.tick().await;
                    let result = gateway.upstreams.probe(&provider, &check.path, check.timeout).await;
                    if let Err(e) = &result {
                        tracing::warn!(provider = %provider.name, error = %e, "health check failed");
                    }
                    let detail = result.as_ref().err().map(String::as_str).unwrap_or("");
                    for health in gateway.router.deployments_of(&provider.name) {
                        health.health_check(result.is_ok(), std::time::Instant::now(), detail);
                    }
                }
            });
        }
    }
}

/// The API router, and the management listener's when one is configured.
fn routes(
    config: &Config,
    ingress: &Arc<Ingress>,
    gateway: &Arc<Gateway>,
    scrape_state: Scraped,
) -> (axum::Router, Option<axum::Router>) {
    let health_route = axum::Router::new().route("/health", get(health)).with_state(gateway.clone());
    let api =
        api_router(ingress.clone()).merge(health_route.clone()).merge(request_log_routes(config, gateway.clone()));
    let sessions_route = axum::Router::new().route("/sessions", get(sessions)).with_state(gateway.clone());
    let scrape = axum::Router::new().route("/metrics", get(prometheus)).with_state(scrape_state);
    let probes = axum::Router::new().route("/ready", get(ready)).with_state(gateway.clone());
    // What operators read (metrics, the CLI pool) is on the management listener when there is
    // one, and then not on the API port; the probes are on both.
    let operations = scrape.merge(sessions_route);
    let (api, management) = match &config.server.management_listen {
        Some(_) => (api, Some(operations.merge(probes.clone()).merge(health_route))),
        None => (api.merge(operations), None),
    };
    let router = api
        .merge(probes)
        // (Bodies are bounded by the handlers themselves, 413 in OpenAI's shape: none takes
        // an extractor that axum's default body limit would apply to. Each layer here wraps
        // every route, at a boxed future per request: only the request id has one.)
        .layer(server::RequestIdLayer);
    (router, management)
}

/// `/admin/requests` and `/admin/usage`, answered from the request log's PostgreSQL.
fn request_log_routes(config: &Config, gateway: Arc<Gateway>) -> axum::Router {
    use crate::request_log::admin;
    let is_admin: admin::IsAdmin = Box::new(move |headers| gateway.auth.is_admin(headers));
    axum::Router::new()
        .route("/admin/requests", get(admin::requests))
        .route("/admin/usage", get(admin::usage))
        .with_state(admin::Admin::new(config.request_log.as_ref(), is_admin))
}

/// Liveness, with each deployment's breaker state and last trip reason as detail, and each
/// cloud provider's credentials (`degraded` while one cannot be refreshed).
async fn health(axum::extract::State(gateway): axum::extract::State<Arc<Gateway>>) -> axum::Json<serde_json::Value> {
    let now = std::time::Instant::now();
    let mut deployments: Vec<serde_json::Value> = gateway.router.deployments().map(|d| d.report(now)).collect();
    deployments.sort_by(|a, b| a["deployment"].as_str().cmp(&b["deployment"].as_str()));
    let mut body = serde_json::json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "deployments": deployments,
        "limits": {"mode": gateway.limits.mode()},
    });
    if !gateway.upstreams.cli_pools().is_empty() {
        body["cli_pools"] = gateway.upstreams.cli_pools().iter().map(|p| p.summary()).collect();
    }
    // Cloud credentials that cannot be refreshed: degraded (still live: a restart would not help).
    let (credentials, failing) = gateway.upstreams.credential_reports();
    if !credentials.is_empty() {
        body["credentials"] = credentials.into();
    }
    if failing {
        body["status"] = "degraded".into();
    }
    axum::Json(body)
}

/// The CLI backend's sessions, per `cli` provider: state (starting, warm, busy, dead), age,
/// requests served, last error; the last few ended sessions too. Unauthenticated like
/// `/health`: it shows process ids and counts, never prompts or keys.
async fn sessions(axum::extract::State(gateway): axum::extract::State<Arc<Gateway>>) -> axum::Json<serde_json::Value> {
    let pools: Vec<serde_json::Value> = gateway.upstreams.cli_pools().iter().map(|p| p.report()).collect();
    axum::Json(serde_json::json!({ "pools": pools }))
}

type Scraped = (Arc<Gateway>, Arc<Metrics>, Option<Kv>, Option<Arc<crate::request_log::Metrics>>);

/// `GET /metrics`: the Prometheus text exposition, breaker states read at scrape time.
async fn prometheus(
    axum::extract::State((gateway, metrics, kv, request_log)): axum::extract::State<Scraped>,
) -> impl axum::response::IntoResponse {
    let now = std::time::Instant::now();
    crate::telemetry::metrics::mirror(&metrics.valkey_errors, kv.as_ref().map(Kv::errors).unwrap_or(0));
    for deployment in gateway.router.deployments() {
        metrics.set_breaker_state(&deployment.id, i64::from(deployment.breaker_state(now).code()));
    }
    for pool in gateway.upstreams.cli_pools().iter() {
        let t = &pool.totals;
        for (status, n) in [
            ("started", &t.started),
            ("warm", &t.warm),
            ("failed", &t.failed),
            ("crashed", &t.crashed),
            ("killed", &t.killed),
            ("recycled", &t.recycled),
            ("cold_start", &t.cold_starts),
        ] {
            metrics.set_sessions(&pool.provider, status, n.load(std::sync::atomic::Ordering::Relaxed));
        }
    }
    let mut text = metrics.render();
    gateway.upstreams.render_credential_metrics(&mut text);
    if let Some(cache) = &gateway.cache {
        cache.render_metrics(&mut text);
    }
    if let Some(verifier) = gateway.auth.jwt() {
        verifier.render_metrics(&mut text);
    }
    if let Some(request_log) = &request_log {
        request_log.render(&mut text);
    }
    ([(http::header::CONTENT_TYPE, crate::telemetry::metrics::CONTENT_TYPE)], text)
}

/// Readiness. Ready once the configuration is loaded and the upstream clients are built (true for
/// as long as this router exists) and, when Valkey is configured, depending on whether it answers:
///
/// | Valkey      | policy      | status | body `status` |
/// |-------------|-------------|--------|---------------|
/// | none        | —           | 200    | `ready`       |
/// | reachable   | either      | 200    | `ready`       |
/// | unreachable | fail-closed | 503    | `unavailable` |
/// | unreachable | fail-open   | 200    | `degraded`    |
///
/// Decisions. Under `fail-closed` a replica without Valkey refuses every limited request with 503
/// anyway, so it leaves the Service: replicas that still reach Valkey (a partition, one zone) take
/// the traffic, and liveness (`/health`) stays 200 so Kubernetes does not restart it. (When Valkey
/// is down for every replica the Service then has no endpoint at all, unlimited teams included:
/// that is what choosing fail-closed means.) Under `fail-open` the replica still serves, each limit
/// divided by the replica count: that is the policy's whole point, and taking every replica out at
/// once on a shared outage would turn degraded limits into a full outage; it stays ready and says
/// `degraded`. The body names the failing dependency and the policy either way.
async fn ready(
    axum::extract::State(gateway): axum::extract::State<Arc<Gateway>>,
) -> (http::StatusCode, axum::Json<serde_json::Value>) {
    let limits = &gateway.limits;
    let Some(reachable) = limits.store_reachable().await else {
        return (http::StatusCode::OK, axum::Json(serde_json::json!({"status": "ready"})));
    };
    let policy = limits.on_valkey_down();
    let mut valkey = serde_json::json!({
        "status": if reachable { "ok" } else { "unreachable" },
        "policy": policy.as_str(),
    });
    if reachable {
        let body = serde_json::json!({"status": "ready", "dependencies": {"valkey": valkey}});
        return (http::StatusCode::OK, axum::Json(body));
    }
    let (code, status) = match policy {
        ValkeyDownPolicy::FailClosed => {
            valkey["limits"] = "limited requests are refused with 503 until Valkey answers".into();
            (http::StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        }
        ValkeyDownPolicy::FailOpen => {
            valkey["limits"] =
                format!("each replica enforces 1/{} of each limit until Valkey answers", limits.replicas()).into();
            (http::StatusCode::OK, "degraded")
        }
    };
    let body = serde_json::json!({"status": status, "failing": ["valkey"], "dependencies": {"valkey": valkey}});
    (code, axum::Json(body))
}
