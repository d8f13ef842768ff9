//! Valkey: the store replicas share (limits, dynamic keys, cache). Standalone or cluster, one
//! multiplexed connection that reconnects by itself; every call is bounded by a timeout so a
//! dead Valkey costs a request milliseconds, never a hang. Callers decide what an error means
//! (a miss, fail-open, fail-closed); this module never decides for them.
//!
//! Key names are the callers', under the configured `valkey.key_prefix`: `eval` puts it before
//! each of its KEYS itself, and a command built by hand names its keys through `Kv::key`. Two
//! installations with different prefixes on one Valkey thus share no key (admin-made keys,
//! counters, cache entries). The prefix has no braces, so a key's `{hash tag}` is still its
//! own and multi-key scripts stay in one cluster slot.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Script};
use tokio::sync::OnceCell;

use crate::config::ValkeySettings;

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("valkey: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("valkey did not answer within {0:?}")]
    Timeout(Duration),
    /// The call that carried this request (with others) failed.
    #[error("{0}")]
    Batch(String),
    /// The call that carried this request never reported back (its task was cancelled).
    #[error("valkey: the admission call was cancelled")]
    Dropped,
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(Arc<OnceCell<ClusterConnection>>, Arc<redis::cluster::ClusterClient>),
}

#[derive(Clone)]
pub struct Kv {
    conn: Conn,
    timeout: Duration,
    errors: Arc<AtomicU64>,
    /// `<valkey.key_prefix>:`, or empty for no prefix.
    prefix: Arc<str>,
}

impl Kv {
    /// Prepares the connection without waiting for Valkey: the gateway starts (and applies its
    /// configured policy) even when Valkey is down, and connects once it is up.
    pub fn new(settings: &ValkeySettings) -> Result<Self, KvError> {
        // Requests are pipelined on one connection: without TCP_NODELAY, Nagle holds a request
        // back until the previous one is acknowledged (milliseconds of added latency under load).
        let tcp = redis::io::tcp::TcpSettings::default().set_nodelay(true);
        let conn = if settings.cluster {
            let client = redis::cluster::ClusterClientBuilder::new(settings.urls.clone())
                .tcp_settings(tcp)
                .connection_timeout(settings.timeout)
                .response_timeout(settings.timeout)
                .retries(1)
                .build()?;
            Conn::Cluster(Arc::new(OnceCell::new()), Arc::new(client))
        } else {
            let info = redis::IntoConnectionInfo::into_connection_info(settings.urls[0].as_str())?;
            let client = redis::Client::open(info.set_tcp_settings(tcp))?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(settings.timeout))
                .set_response_timeout(Some(settings.timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(500));
            Conn::Single(ConnectionManager::new_lazy_with_config(client, config)?)
        };
        let prefix = if settings.key_prefix.is_empty() { String::new() } else { format!("{}:", settings.key_prefix) };
        Ok(Self { conn, timeout: settings.timeout, errors: Arc::new(AtomicU64::new(0)), prefix: prefix.into() })
    }

    /// The name in Valkey of the key the gateway calls `name`.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Errors seen so far (for the `llm_gateway_valkey_errors_total` metric).
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    pub async fn query<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, KvError> {
        let result = tokio::time::timeout(self.timeout * 2, self.send(cmd)).await;
        self.settle(result)
    }

    /// Runs a Lua script on `keys` (each under the prefix): EVALSHA, built as one flat command
    /// (hot paths call this per request); on NOSCRIPT (a restarted or new node) it loads the
    /// script and runs it again.
    pub async fn eval<T: FromRedisValue>(&self, script: &Script, keys: &[&str], args: &[i64]) -> Result<T, KvError> {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(script.get_hash()).arg(keys.len());
        if self.prefix.is_empty() {
            cmd.arg(keys);
        } else {
            for key in keys {
                cmd.arg(self.key(key));
            }
        }
        cmd.arg(args);
        let result = tokio::time::timeout(self.timeout * 2, async {
            match self.send(&cmd).await {
                Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                    self.load_and_eval(script, keys, args).await
                }
                other => other,
            }
        })
        .await;
        self.settle(result)
    }

    async fn send<T: FromRedisValue>(&self, cmd: &Cmd) -> redis::RedisResult<T> {
        match &self.conn {
            Conn::Single(manager) => cmd.query_async(&mut manager.clone()).await,
            Conn::Cluster(cell, client) => {
                let conn = cell.get_or_try_init(|| client.get_async_connection()).await?;
                cmd.query_async(&mut conn.clone()).await
            }
        }
    }

    async fn load_and_eval<T: FromRedisValue>(
        &self,
        script: &Script,
        keys: &[&str],
        args: &[i64],
    ) -> redis::RedisResult<T> {
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(self.key(key));
        }
        for arg in args {
            invocation.arg(*arg);
        }
        match &self.conn {
            Conn::Single(manager) => invocation.invoke_async(&mut manager.clone()).await,
            Conn::Cluster(cell, client) => {
                let conn = cell.get_or_try_init(|| client.get_async_connection()).await?;
                invocation.invoke_async(&mut conn.clone()).await
            }
        }
    }

    /// Runs a pipeline (`MULTI`/`EXEC` when atomic); in a cluster its keys must share a slot.
    pub async fn query_pipe<T: FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T, KvError> {
        let result = tokio::time::timeout(self.timeout * 2, async {
            match &self.conn {
                Conn::Single(manager) => pipe.query_async(&mut manager.clone()).await,
                Conn::Cluster(cell, client) => {
                    let conn = cell.get_or_try_init(|| client.get_async_connection()).await?;
                    pipe.query_async(&mut conn.clone()).await
                }
            }
        })
        .await;
        self.settle(result)
    }

    /// The primaries to run a keyspace-wide command (SCAN) on: `[None]` for a standalone server,
    /// each primary's address in a cluster.
    pub async fn primaries(&self) -> Result<Vec<Option<(String, u16)>>, KvError> {
        if let Conn::Single(_) = &self.conn {
            return Ok(vec![None]);
        }
        let nodes: String = self.query(redis::cmd("CLUSTER").arg("NODES")).await?;
        let mut out = Vec::new();
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 3 || !fields[2].split(',').any(|f| f == "master") || fields[2].contains("fail") {
                continue;
            }
            let addr = fields[1].split('@').next().unwrap_or_default();
            if let Some((host, port)) = addr.rsplit_once(':')
                && let Ok(port) = port.parse()
            {
                out.push(Some((host.to_owned(), port)));
            }
        }
        Ok(out)
    }

    /// Runs `cmd` on one node (`None` = wherever it would normally go).
    pub async fn query_on<T: FromRedisValue>(&self, node: Option<&(String, u16)>, cmd: &Cmd) -> Result<T, KvError> {
        let (Some((host, port)), Conn::Cluster(cell, client)) = (node, &self.conn) else {
            return self.query(cmd).await;
        };
        use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host: host.clone(), port: *port });
        let result = tokio::time::timeout(self.timeout * 2, async {
            let conn = cell.get_or_try_init(|| client.get_async_connection()).await?;
            let value = conn.clone().route_command(cmd.clone(), routing).await?;
            redis::from_redis_value(value).map_err(redis::RedisError::from)
        })
        .await;
        self.settle(result)
    }

    pub async fn ping(&self) -> bool {
        self.query::<String>(&redis::cmd("PING")).await.is_ok()
    }

    fn settle<T>(&self, result: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>) -> Result<T, KvError> {
        let result = match result {
            Ok(r) => r.map_err(KvError::from),
            Err(_) => Err(KvError::Timeout(self.timeout * 2)),
        };
        if result.is_err() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        result
    }
}
