//! Credentials beyond static keys: the admin API's keys (hash-only in Valkey, usable on every
//! replica, revoked everywhere within a second) and OIDC JWTs checked against a JWKS served by
//! the test (RS256 and ES256 keys made here; expired, wrong audience or issuer, wrong signature,
//! `alg: none` and HMAC all refused).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a test crate: a failure stops it at once, and it reports on stdout"
)]

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use llm_gateway::auth::jwt;
use llm_gateway::clock::ManualClock;
use serde_json::{Value, json};
use support::valkey::{ValkeyCluster, ValkeyServer};
use support::{Gateway, json};

const ADMIN: &str = "sk-admin-test-0123456789";

fn hello(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Hello"}]})
}

fn admin_config(store: &str) -> String {
    format!(
        "{store}admin: {{ key_env: ADMIN_KEY }}\nteams: {{ t: {{ models: ['*'] }} }}\nproviders: {{ p: {{ dialect: mock }} }}\n\
         models: {{ m: {{ deployments: [{{ provider: p }}] }}, n: {{ deployments: [{{ provider: p }}] }} }}\n"
    )
}

async fn admin(gw: &Gateway, method: reqwest::Method, path: &str, key: &str, body: Option<Value>) -> reqwest::Response {
    let mut request = gw.client.request(method, gw.url(path)).bearer_auth(key);
    if let Some(body) = body {
        request = request.header("content-type", "application/json").body(body.to_string());
    }
    request.send().await.unwrap()
}

/// Create on one replica, use on the other, revoke on the first: the second refuses the key
/// within a second. Valkey holds the key's hash, never the key.
async fn admin_keys_reach_every_replica(store: &str, valkey_dump: impl AsyncFn() -> String) {
    let yaml = admin_config(store);
    let env = [("ADMIN_KEY", ADMIN)];
    let (a, b) = (Gateway::start_with_env(&yaml, &env).await, Gateway::start_with_env(&yaml, &env).await);
    let post = |gw, key, body| admin(gw, reqwest::Method::POST, "/admin/keys", key, Some(body));

    assert_eq!(post(&a, "sk-wrong", json!({"team": "t"})).await.status(), 401);
    let r = post(&a, ADMIN, json!({"team": "nope"})).await;
    assert_eq!(r.status(), 400);
    assert_eq!(json(r).await["error"]["message"], "Unknown team \"nope\".");

    let r = post(
        &a,
        ADMIN,
        json!({"team": "t", "models": ["m"], "limits": {"rpm": 120}, "metadata": {"owner": "ci"}, "expires_in": "30d"}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let created = json(r).await;
    let key = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with("sk-lg-"));
    assert_eq!(created["metadata"]["owner"], "ci");

    let r = b.chat_as(&key, hello("m")).await;
    assert_eq!(r.status(), 200, "the other replica knows the key");
    assert_eq!(r.headers()["x-ratelimit-limit-requests"], "120", "with its own limits");
    assert_eq!(b.chat_as(&key, hello("n")).await.status(), 403, "and its own models");
    assert_eq!(b.quota(&key).await["key_id"], id.as_str());

    let listed = json(admin(&b, reqwest::Method::GET, "/admin/keys", ADMIN, None).await).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    assert_eq!(listed["data"][0]["id"], id.as_str());
    assert!(listed["data"][0].get("key").is_none());
    let shown = admin(&b, reqwest::Method::GET, &format!("/admin/keys/{id}"), ADMIN, None).await;
    assert_eq!(json(shown).await["team"], "t");
    let dump = valkey_dump().await;
    assert!(dump.contains(&id), "the key's record is in Valkey");
    assert!(!dump.contains(&key) && !dump.contains(&key[6..]), "but never the key itself");

    let r = admin(&a, reqwest::Method::DELETE, &format!("/admin/keys/{id}"), ADMIN, None).await;
    assert_eq!(r.status(), 200);
    let revoked = Instant::now();
    assert_eq!(a.chat_as(&key, hello("m")).await.status(), 401, "the revoking replica at once");
    loop {
        if b.chat_as(&key, hello("m")).await.status() == 401 {
            break;
        }
        assert!(revoked.elapsed() < Duration::from_secs(1), "the other replica still accepts a revoked key");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = admin(&a, reqwest::Method::DELETE, &format!("/admin/keys/{id}"), ADMIN, None).await;
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_keys_reach_every_replica_standalone() {
    let valkey = ValkeyServer::start().await;
    let store = format!("valkey: {{ url: '{}' }}\n", valkey.url());
    admin_keys_reach_every_replica(&store, async || dump(&valkey).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_keys_reach_every_replica_on_a_cluster() {
    let cluster = ValkeyCluster::start().await;
    let urls: Vec<String> = cluster.urls().iter().map(|u| format!("'{u}'")).collect();
    let store = format!("valkey: {{ urls: [{}], cluster: true }}\n", urls.join(", "));
    admin_keys_reach_every_replica(&store, async || {
        let mut all = String::new();
        for node in &cluster.nodes {
            all.push_str(&dump(node).await);
        }
        all
    })
    .await;
}

/// Every key and value in one Valkey server, as text.
async fn dump(valkey: &ValkeyServer) -> String {
    let keys: Vec<String> = valkey.cmd(redis::cmd("KEYS").arg("*")).await;
    let mut out = String::new();
    for key in keys {
        let kind: String = valkey.cmd(redis::cmd("TYPE").arg(&key)).await;
        let value: Vec<String> = match kind.as_str() {
            "string" => vec![valkey.cmd(redis::cmd("GET").arg(&key)).await],
            "hash" => valkey.cmd(redis::cmd("HGETALL").arg(&key)).await,
            _ => Vec::new(),
        };
        out.push_str(&format!("{key} {value:?}\n"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_keys_without_valkey_live_in_process_and_expire() {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let gw = Gateway::start_with_clock(&admin_config(""), &[("ADMIN_KEY", ADMIN)], clock.clone()).await;
    let r =
        admin(&gw, reqwest::Method::POST, "/admin/keys", ADMIN, Some(json!({"team": "t", "expires_in": "1h"}))).await;
    let created = json(r).await;
    assert_eq!(created["expires"], "2027-01-15T09:00:00Z");
    let key = created["key"].as_str().unwrap();
    assert_eq!(gw.chat_as(key, hello("m")).await.status(), 200);
    clock.advance(3_600_000);
    let r = gw.chat_as(key, hello("m")).await;
    assert_eq!(r.status(), 401);
    assert_eq!(json(r).await["error"]["message"], "The API key has expired.");

    let off = Gateway::start(&admin_config("").replace("admin: { key_env: ADMIN_KEY }\n", "")).await;
    let r = admin(&off, reqwest::Method::GET, "/admin/keys", ADMIN, None).await;
    assert_eq!(r.status(), 404, "no admin credential configured: no admin API");
}

/// `cmdstat_<command>:calls=N` from Valkey's `INFO commandstats`: how often `command` ran.
async fn valkey_calls(valkey: &ValkeyServer, command: &str) -> u64 {
    let info: String = valkey.cmd(redis::cmd("INFO").arg("commandstats")).await;
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|rest| rest.split(',').next().unwrap().parse().unwrap())
        .unwrap_or(0)
}

/// Issue #26, item 13a: a client cycling random keys fills the key cache with misses. That must
/// not cost anyone else their cached lookup: a real key keeps authenticating without a Valkey
/// read, and an unknown key that a client keeps retrying keeps being refused from the cache.
/// (The cache used to be flushed wholesale once full: every key, good or bad, was read again.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_keys_evict_no_cached_key_lookup() {
    use llm_gateway::auth::keys::{KeyStore, NewKey};
    use llm_gateway::config::{TeamPolicy, ValkeySettings, sha256};

    let valkey = ValkeyServer::start().await;
    let settings = ValkeySettings {
        urls: vec![valkey.url()],
        cluster: false,
        timeout: Duration::from_secs(2),
        key_prefix: String::new(),
    };
    let kv = llm_gateway::kv::Kv::new(&settings).unwrap();
    let teams = Arc::new([("t".to_owned(), Arc::new(TeamPolicy::default()))].into());
    // A cache TTL far longer than the test: only an eviction can send a lookup to Valkey again.
    let store =
        KeyStore::new(Some(kv), Duration::from_secs(3600), teams, Arc::new(ManualClock::new(1_800_000_000_000)), false);
    let (good, _) = store.create(NewKey { team: "t".into(), ..NewKey::default() }).await.unwrap();
    let (good, retried) = (sha256(good.as_bytes()), sha256(b"sk-lg-a-revoked-key-still-in-a-ci-secret"));
    assert!(store.lookup(&good).await.unwrap().is_some());
    assert!(store.lookup(&retried).await.unwrap().is_none());
    let before = valkey_calls(&valkey, "get").await;

    let flood = 30_000u32;
    for i in 0..flood {
        assert!(store.lookup(&sha256(format!("sk-random-{i}").as_bytes())).await.unwrap().is_none());
        if i % 100 == 0 {
            assert!(store.lookup(&good).await.unwrap().is_some());
            assert!(store.lookup(&retried).await.unwrap().is_none());
        }
    }
    let reads = valkey_calls(&valkey, "get").await - before;
    assert!(reads >= u64::from(flood), "every random key was looked up in Valkey ({reads} reads)");
    assert_eq!(
        reads,
        u64::from(flood),
        "{} lookups of the cached keys went to Valkey during a flood of {flood} random keys",
        reads - u64::from(flood)
    );
}

// ---------------------------------------------------------------------------------------------
// OIDC / JWT

const ISSUER: &str = "https://idp.test/realms/platform";

struct Signer {
    key: EncodingKey,
    alg: Algorithm,
    kid: &'static str,
}

impl Signer {
    fn rsa(kid: &'static str) -> Self {
        use aws_lc_rs::encoding::AsDer;
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let pkcs8: aws_lc_rs::encoding::Pkcs8V1Der = pair.as_der().unwrap();
        Self { key: EncodingKey::from_rsa_der(&pkcs1_of(pkcs8.as_ref())), alg: Algorithm::RS256, kid }
    }

    fn ec(kid: &'static str) -> Self {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let pkcs8 = aws_lc_rs::signature::EcdsaKeyPair::generate_pkcs8(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &rng,
        )
        .unwrap();
        Self { key: EncodingKey::from_ec_der(pkcs8.as_ref()), alg: Algorithm::ES256, kid }
    }

    fn jwk(&self) -> Jwk {
        let mut jwk = Jwk::from_encoding_key(&self.key, self.alg).unwrap();
        jwk.common.key_id = Some(self.kid.into());
        jwk
    }

    fn token(&self, claims: &Value) -> String {
        let header = Header { kid: Some(self.kid.into()), ..Header::new(self.alg) };
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }
}

/// The RSAPrivateKey inside a PKCS#8 PrivateKeyInfo (version, algorithm, OCTET STRING key).
fn pkcs1_of(pkcs8: &[u8]) -> Vec<u8> {
    fn next(input: &[u8]) -> (u8, &[u8], &[u8]) {
        let (len, header) = if input[1] < 0x80 {
            (usize::from(input[1]), 2)
        } else {
            let n = usize::from(input[1] & 0x7f);
            (input[2..2 + n].iter().fold(0, |acc, b| acc << 8 | usize::from(*b)), 2 + n)
        };
        (input[0], &input[header..header + len], &input[header + len..])
    }
    let (_, info, _) = next(pkcs8);
    let (_, _, rest) = next(info);
    let (_, _, rest) = next(rest);
    let (tag, key, _) = next(rest);
    assert_eq!(tag, 0x04, "an OCTET STRING holds the key");
    key.to_vec()
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn claims(groups: Value) -> Value {
    json!({"iss": ISSUER, "aud": "llm-gateway", "sub": "user-1", "exp": now() + 600, "iat": now(), "groups": groups})
}

/// Serves a JWKS that the test can change, on 127.0.0.1:0.
async fn jwks_server(keys: Arc<Mutex<Vec<Jwk>>>) -> String {
    let app = axum::Router::new().route(
        "/certs",
        axum::routing::get(move || {
            let keys = keys.clone();
            async move { axum::Json(JwkSet { keys: keys.lock().unwrap().clone() }) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/certs")
}

/// `jwks_server` whose answers take `delay_ms` (changed by the test as it goes), counting the
/// fetches it gets in `fetches`.
async fn slow_jwks_server(keys: Vec<Jwk>, delay_ms: Arc<AtomicU64>, fetches: Arc<AtomicU64>) -> String {
    let app = axum::Router::new().route(
        "/certs",
        axum::routing::get(move || {
            let (keys, delay_ms, fetches) = (keys.clone(), delay_ms.clone(), fetches.clone());
            async move {
                fetches.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(delay_ms.load(Ordering::SeqCst))).await;
                axum::Json(JwkSet { keys })
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/certs")
}

fn jwt_config(mode: &str, jwks_url: &str) -> String {
    jwt_config_with(mode, jwks_url, "teams: { '/platform/team-a': team-a }, ")
}

/// `jwt_config` with `oidc` (text inside `auth.oidc`'s flow mapping, ending with `, `).
fn jwt_config_with(mode: &str, jwks_url: &str, oidc: &str) -> String {
    format!(
        "auth:\n  mode: {mode}\n  oidc: {{ issuer_url: '{ISSUER}', audience: llm-gateway, jwks_url: '{jwks_url}', team_claim: groups, {oidc}limits: {{ rpm: 60 }} }}\n\
         keys: [{{ key: sk-test, team: team-b }}]\n\
         teams: {{ team-a: {{ models: ['*'] }}, team-b: {{ models: ['*'] }} }}\n\
         providers: {{ p: {{ dialect: mock }} }}\nmodels: {{ m: {{ deployments: [{{ provider: p }}] }} }}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwts_are_verified_against_the_issuers_keys() {
    let (rsa, ec, impostor, rotated) =
        (Signer::rsa("rsa-1"), Signer::ec("ec-1"), Signer::rsa("rsa-1"), Signer::rsa("rsa-2"));
    let published = Arc::new(Mutex::new(vec![rsa.jwk(), ec.jwk()]));
    let jwks_url = jwks_server(published.clone()).await;
    let gw = Gateway::start(&jwt_config("hybrid", &jwks_url)).await;
    let team_a = claims(json!(["/platform/team-a", "offline_access"]));

    // Valid tokens, both algorithms: mapped to the team their group names.
    for token in [rsa.token(&team_a), ec.token(&team_a)] {
        let r = gw.chat_as(&token, hello("m")).await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        let q = gw.quota(&token).await;
        assert_eq!(q["team"], "team-a");
        assert!(q["key_id"].as_str().unwrap().starts_with("jwt:"), "{q}");
    }
    let r = gw.chat_as(&rsa.token(&team_a), hello("m")).await;
    assert_eq!(r.headers()["x-ratelimit-limit-requests"], "60", "the per-user limits apply");
    assert_eq!(gw.chat_as("sk-test", hello("m")).await.status(), 200, "hybrid: API keys still work");

    // Refusals, each with 401 and a reason that never repeats the token.
    let mut expired = team_a.clone();
    expired["exp"] = json!(now() - 3600);
    let mut wrong_audience = team_a.clone();
    wrong_audience["aud"] = json!("someone-else");
    let mut wrong_issuer = team_a.clone();
    wrong_issuer["iss"] = json!("https://evil.test/realms/platform");
    let unsigned = {
        let valid = rsa.token(&team_a);
        let payload = valid.split('.').nth(1).unwrap().to_owned();
        // {"alg":"none","typ":"JWT"}
        format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.")
    };
    let hmac = jsonwebtoken::encode(
        &Header { kid: Some("rsa-1".into()), ..Header::new(Algorithm::HS256) },
        &team_a,
        &EncodingKey::from_secret(b"shared"),
    )
    .unwrap();
    let cases = [
        ("expired", rsa.token(&expired), "it has expired"),
        ("wrong audience", rsa.token(&wrong_audience), "another audience"),
        ("wrong issuer", ec.token(&wrong_issuer), "another issuer"),
        ("wrong signature", impostor.token(&team_a), "signature does not verify"),
        ("alg none", unsigned, "not a well-formed JWT"),
        ("hmac", hmac, "algorithm HS256 is not accepted"),
        ("unknown key", rotated.token(&team_a), "a key the issuer does not publish"),
        ("no team", rsa.token(&claims(json!(["/platform/other"]))), "names no configured team"),
    ];
    for (what, token, reason) in cases {
        let r = gw.chat_as(&token, hello("m")).await;
        assert_eq!(r.status(), 401, "{what}");
        let body = r.text().await.unwrap();
        assert!(body.contains(reason), "{what}: {body}");
        assert!(!body.contains(&token[..40]), "{what}: the error echoes the token");
    }

    // The issuer rotates its keys: a token naming the new key id makes the gateway refetch.
    published.lock().unwrap().push(rotated.jwk());
    let deadline = Instant::now() + Duration::from_secs(5);
    while gw.chat_as(&rotated.token(&team_a), hello("m")).await.status() != 200 {
        assert!(Instant::now() < deadline, "the rotated key was never fetched");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // keycloak mode: tokens only.
    let only = Gateway::start(&jwt_config("keycloak", &jwks_url)).await;
    assert_eq!(only.chat_as(&ec.token(&team_a), hello("m")).await.status(), 200);
    assert_eq!(only.chat_as("sk-test", hello("m")).await.status(), 401);
}

/// A team claim's value names a team only when it is exactly a configured value (issue #26):
/// anyone who may create a group somewhere in the realm can make `/evil/team-a`, whose last
/// segment is a team's name; it must not be taken for that team.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_team_claims_match_the_configured_value_exactly() {
    let rsa = Signer::rsa("rsa-1");
    let jwks_url = jwks_server(Arc::new(Mutex::new(vec![rsa.jwk()]))).await;
    let team_of = async |gw: &Gateway, groups: Value| {
        let token = rsa.token(&claims(groups));
        let (status, body) = list_as(gw, &token).await;
        if status != 200 {
            assert_eq!(status, 401, "{body}");
            assert!(body.contains("names no configured team"), "{body}");
            return None;
        }
        Some(gw.quota(&token).await["team"].as_str().unwrap().to_owned())
    };

    // No mapping: a claim value names the team of exactly that name, and nothing else does.
    let plain = Gateway::start(&jwt_config_with("keycloak", &jwks_url, "")).await;
    assert_eq!(team_of(&plain, json!(["/evil/team-a"])).await, None, "a group path ending in a team's name");
    assert_eq!(team_of(&plain, json!("/team-a")).await, None);
    assert_eq!(team_of(&plain, json!("team-a/")).await, None);
    assert_eq!(team_of(&plain, json!(["offline_access", "team-b"])).await.as_deref(), Some("team-b"));

    // Keycloak with "Full group path" on: the mapped paths, exactly, and only they.
    let mapped = jwt_config_with(
        "keycloak",
        &jwks_url,
        "teams: { '/platform/team-a': team-a, '/platform/ops/team-b': team-b }, ",
    );
    let mapped = Gateway::start(&mapped).await;
    assert_eq!(team_of(&mapped, json!(["/platform/team-a"])).await.as_deref(), Some("team-a"));
    assert_eq!(team_of(&mapped, json!(["x", "/platform/ops/team-b"])).await.as_deref(), Some("team-b"));
    for groups in ["/evil/team-a", "/platform/team-a/sub", "/Platform/team-a", "team-a", "/platform/team-b"] {
        assert_eq!(team_of(&mapped, json!([groups])).await, None, "{groups}");
    }
}

/// `llm_gateway_jwt_verifications_total{result=...}` from `/metrics`.
async fn verifications(gw: &Gateway, result: &str) -> u64 {
    let text = gw.metrics().await;
    let line = format!("llm_gateway_jwt_verifications_total{{result=\"{result}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&line)).unwrap_or_else(|| panic!("no {line} in\n{text}")).parse().unwrap()
}

/// `GET /v1/models` as `token`: (status, body).
async fn list_as(gw: &Gateway, token: &str) -> (u16, String) {
    let r = gw.client.get(gw.url("/v1/models")).bearer_auth(token).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// A token is verified once, then answered from the cache (no signature check) until the
/// cache's minute is up, never past the token's `exp` (by the gateway's clock), and not after
/// the JWKS stops publishing the key that signed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_jwts_are_cached_until_exp_and_while_their_key_is_published() {
    let (rsa, ec) = (Signer::rsa("rsa-1"), Signer::ec("ec-1"));
    let published = Arc::new(Mutex::new(vec![rsa.jwk(), ec.jwk()]));
    let jwks_url = jwks_server(published.clone()).await;
    let start = now();
    let clock = Arc::new(ManualClock::new(start * 1000));
    // Leeway 30 s (the default); the JWKS is refreshed every second.
    let yaml = jwt_config_with("keycloak", &jwks_url, "refresh: 1s, ");
    let gw = Gateway::start_with_clock(&yaml, &[], clock.clone()).await;
    let mut claims = claims(json!(["team-a"]));
    claims["exp"] = json!(start + 120);
    let token = rsa.token(&claims);

    for _ in 0..3 {
        assert_eq!(list_as(&gw, &token).await.0, 200);
    }
    assert_eq!((verifications(&gw, "verified").await, verifications(&gw, "cached").await), (1, 2));

    // The cache trusts a verification for a minute at most.
    clock.advance(jwt::CACHE_TTL.as_millis() as u64);
    assert_eq!(list_as(&gw, &token).await.0, 200);
    assert_eq!((verifications(&gw, "verified").await, verifications(&gw, "cached").await), (2, 2));

    // Past exp the cached verification is not used: the token is verified again, accepted within
    // the leeway (and not cached), refused once it is over.
    clock.set((start + 121) * 1000);
    assert_eq!(list_as(&gw, &token).await.0, 200);
    assert_eq!(list_as(&gw, &token).await.0, 200);
    assert_eq!((verifications(&gw, "verified").await, verifications(&gw, "cached").await), (4, 2));
    clock.set((start + 151) * 1000);
    let (status, body) = list_as(&gw, &token).await;
    assert_eq!(status, 401);
    assert!(body.contains("it has expired"), "{body}");
    assert_eq!(verifications(&gw, "rejected").await, 1);
    assert_eq!(verifications(&gw, "cached").await, 2, "an expired token never comes from the cache");

    // The issuer stops publishing the key: its cached tokens are refused at the next refresh.
    claims["exp"] = json!(start + 3600);
    let (by_rsa, by_ec) = (rsa.token(&claims), ec.token(&claims));
    for token in [&by_rsa, &by_ec, &by_rsa, &by_ec] {
        assert_eq!(list_as(&gw, token).await.0, 200);
    }
    assert_eq!(verifications(&gw, "cached").await, 4);
    published.lock().unwrap().retain(|k| k.common.key_id.as_deref() != Some("rsa-1"));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = list_as(&gw, &by_rsa).await;
        if status == 401 {
            assert!(body.contains("a key the issuer does not publish"), "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "a token signed by a withdrawn key is still accepted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cached = verifications(&gw, "cached").await;
    assert_eq!(list_as(&gw, &by_ec).await.0, 200, "tokens of the remaining key still pass");
    assert_eq!(list_as(&gw, &by_rsa).await.0, 401);
    assert!(verifications(&gw, "cached").await <= cached + 1);
}

/// Issue #26, item 13b: a token naming a key id the gateway does not know makes it refetch the
/// JWKS; when the issuer is slow to answer, that fetch must hold up nobody else. Tokens of known
/// keys verify at once meanwhile, and the requests with unknown key ids that arrive during the
/// fetch all wait for that one fetch (not for a queue of fetches, one after another).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_jwks_refetch_is_shared_and_holds_up_no_known_key() {
    const SLOW: Duration = Duration::from_secs(3);
    let (rsa, unpublished) = (Signer::rsa("rsa-1"), Signer::rsa("rsa-9"));
    let (delay_ms, fetches) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let jwks_url = slow_jwks_server(vec![rsa.jwk()], delay_ms.clone(), fetches.clone()).await;
    let gw = Gateway::start(&jwt_config("keycloak", &jwks_url)).await;
    let team_a = claims(json!(["/platform/team-a"]));
    assert_eq!(list_as(&gw, &rsa.token(&team_a)).await.0, 200);
    // Refetches for unknown key ids are at least a second apart: let the first fetch's second pass.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    delay_ms.store(SLOW.as_millis() as u64, Ordering::SeqCst);
    let fetched = fetches.load(Ordering::SeqCst);
    let unknown = unpublished.token(&team_a);
    let unknown_kids = futures_util::future::join_all((0..4).map(|_| async {
        let started = Instant::now();
        let (status, body) = list_as(&gw, &unknown).await;
        (status, body, started.elapsed())
    }));
    let known_kid = async {
        // Once the refetch is under way: a token of the published key, never verified before.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut fresh = team_a.clone();
        fresh["sub"] = json!("user-2");
        let started = Instant::now();
        let status = list_as(&gw, &rsa.token(&fresh)).await.0;
        (status, started.elapsed())
    };
    let (unknown_kids, (known_status, known_took)) = tokio::join!(unknown_kids, known_kid);
    assert_eq!(known_status, 200);
    assert!(known_took < Duration::from_secs(1), "a token of a known key waited {known_took:?} for the JWKS fetch");
    let took: Vec<Duration> = unknown_kids.iter().map(|(_, _, took)| *took).collect();
    for (status, body, _) in &unknown_kids {
        assert_eq!(*status, 401);
        assert!(body.contains("a key the issuer does not publish"), "{body}");
    }
    assert!(
        took.iter().all(|t| *t < SLOW + Duration::from_millis(1500)),
        "requests with an unknown key id waited {took:?} for a {SLOW:?} JWKS fetch"
    );
    assert_eq!(fetches.load(Ordering::SeqCst) - fetched, 1, "one JWKS fetch served them all");
}
