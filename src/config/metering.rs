//! The `metering:` section: where usage events go (OpenMeter), how they are shaped, and how the
//! durable outbox between the two behaves. Raw structs as written, then validated settings.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Env, Secret, duration};

pub const DEFAULT_EVENT_TYPE: &str = "llm.tokens";
pub const DEFAULT_PATH: &str = "/api/v1/events";
pub const DEFAULT_OUTBOX_DIR: &str = "/var/lib/llm-gateway/outbox";
pub const DEFAULT_TOKENIZER: &str = "o200k_base";
/// How often a replica looks for the outbox directories of replicas that are gone.
pub const DEFAULT_ADOPT_INTERVAL: Duration = Duration::from_secs(30);
/// The dead-letter file and its one rotated predecessor, together.
pub const DEFAULT_DEAD_LETTER_MAX_BYTES: u64 = 64 << 20;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetering {
    /// Default true when the section is present.
    pub enabled: Option<bool>,
    pub openmeter: Option<RawOpenMeter>,
    /// CloudEvent `type` (a meter's `eventType`); default `llm.tokens`.
    pub event_type: Option<String>,
    /// `team` (default) or `key_id`: what becomes the CloudEvent `subject`.
    pub subject: Option<String>,
    /// CloudEvent `source`; default `llm-gateway/<hostname>`. Keep it stable across restarts.
    pub source: Option<String>,
    /// The directory that holds one outbox directory per replica (`<outbox_dir>/<replica>`).
    pub outbox_dir: Option<String>,
    /// How often to look in `outbox_dir` for the directories of replicas that are gone, and
    /// adopt their backlog (also done at start). Default 30s.
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub adopt_interval: Option<Duration>,
    /// Bytes of refused events kept (the dead-letter file and its rotated `.1`); default 64MiB.
    pub dead_letter_max_bytes: Option<ByteSize>,
    /// `always` (every write batch), `interval` (default, every `fsync_interval`) or `never`.
    pub fsync: Option<String>,
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub fsync_interval: Option<Duration>,
    pub segment_bytes: Option<ByteSize>,
    pub max_outbox_bytes: Option<ByteSize>,
    /// `reject` (default: new requests get 503 while the outbox is full) or `drop`.
    pub when_full: Option<String>,
    /// Events held in memory between the request path and the outbox writer.
    pub queue_capacity: Option<usize>,
    pub batch: Option<RawBatch>,
    pub retry: Option<RawMeterRetry>,
    /// On shutdown, how long to keep delivering before leaving the rest on disk (default 5s).
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub flush_timeout: Option<Duration>,
    /// Local token counting: upstream model name or `provider/model` → `o200k_base`,
    /// `cl100k_base`, `p50k_base`, `r50k_base`, `o200k_harmony`, or a path to a `tokenizer.json`.
    #[serde(default)]
    pub tokenizers: BTreeMap<String, String>,
    /// Used when neither the catalogue nor `tokenizers` names one; default `o200k_base`.
    pub default_tokenizer: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOpenMeter {
    pub url: Option<String>,
    /// Below `url`; default `/api/v1/events` (v3 / Konnect: `/api/v3/openmeter/events`).
    pub path: Option<String>,
    /// Environment variable holding a bearer token (OpenMeter Cloud, Konnect). Optional.
    pub token_env: Option<String>,
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub timeout: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBatch {
    pub max_events: Option<usize>,
    pub max_bytes: Option<ByteSize>,
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub max_wait: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMeterRetry {
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub initial_backoff: Option<Duration>,
    #[serde(default, deserialize_with = "duration::deserialize")]
    pub max_backoff: Option<Duration>,
}

/// A size: a number of bytes, or a string with a unit (`64MiB`, `1GiB`, `500KB`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "SizeText")]
pub struct ByteSize(pub u64);

#[derive(Deserialize)]
#[serde(untagged)]
enum SizeText {
    Number(u64),
    Text(String),
}

impl TryFrom<SizeText> for ByteSize {
    type Error = String;
    fn try_from(v: SizeText) -> Result<Self, String> {
        match v {
            SizeText::Number(n) => Ok(ByteSize(n)),
            SizeText::Text(t) => parse_size(&t).map(ByteSize),
        }
    }
}

pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| format!("invalid size {text:?} (expected e.g. 64MiB, 1GiB)"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        other => return Err(format!("invalid size unit {other:?} in {text:?} (use B, KiB, MiB, GiB, KB, MB, GB)")),
    };
    n.checked_mul(factor).ok_or_else(|| format!("size {text:?} is too large"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectFrom {
    Team,
    KeyId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// After every batch the writer appends (group commit).
    Always,
    Interval(Duration),
    /// Leave it to the OS (survives a process crash, not a power loss).
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenFull {
    /// Refuse new requests with 503 until the outbox has room again.
    Reject,
    /// Keep serving; drop the events that do not fit, counted in a metric and logged.
    Drop,
}

#[derive(Debug, Clone)]
pub struct OpenMeterSettings {
    /// `{url}{path}`.
    pub endpoint: String,
    pub token: Option<Secret>,
    pub timeout: Duration,
}

/// Validated `metering:` settings.
#[derive(Debug, Clone)]
pub struct MeteringSettings {
    pub openmeter: OpenMeterSettings,
    pub event_type: String,
    pub subject: SubjectFrom,
    pub source: String,
    /// Holds one directory per replica; this process writes `outbox_dir/replica`.
    pub outbox_dir: PathBuf,
    /// This replica's name: `POD_NAME` (the chart sets it), else the hostname; one path component.
    pub replica: String,
    pub adopt_interval: Duration,
    pub dead_letter_max_bytes: u64,
    pub fsync: Fsync,
    pub segment_bytes: u64,
    pub max_outbox_bytes: u64,
    pub when_full: WhenFull,
    pub queue_capacity: usize,
    pub batch_max_events: usize,
    pub batch_max_bytes: usize,
    pub batch_max_wait: Duration,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub flush_timeout: Duration,
    pub tokenizers: BTreeMap<String, String>,
    pub default_tokenizer: String,
}

impl MeteringSettings {
    /// The outbox directory this process owns (and locks): `outbox_dir/replica`.
    pub fn replica_dir(&self) -> PathBuf {
        self.outbox_dir.join(&self.replica)
    }
}

/// `None` when metering is off: no section (and no `OPENMETER_URL`), or `enabled: false`.
/// The environment the Helm chart sets overrides the file: `OPENMETER_URL` (and turns metering
/// on), `OPENMETER_TOKEN` (the default `token_env`), `LLM_GATEWAY_OUTBOX_DIR`; `POD_NAME` names
/// the replica's directory inside it.
pub fn validate(
    raw: Option<RawMetering>,
    env: &dyn Env,
    warnings: &mut Vec<String>,
) -> Result<Option<MeteringSettings>, ConfigError> {
    let env_url = env.var("OPENMETER_URL");
    let raw = match (raw, &env_url) {
        (Some(raw), _) => raw,
        (None, Some(_)) => RawMetering::default(),
        (None, None) => return Ok(None),
    };
    if raw.enabled == Some(false) {
        return Ok(None);
    }
    let openmeter = openmeter_settings(raw.openmeter.unwrap_or_default(), env_url, env, warnings)?;
    let event_type = raw.event_type.unwrap_or_else(|| DEFAULT_EVENT_TYPE.into());
    if event_type.trim().is_empty() {
        return Err(err("event_type", "must not be empty".into()));
    }
    let subject = subject_from(raw.subject.as_deref())?;
    let source = event_source(raw.source, env)?;
    let outbox_dir = PathBuf::from(
        env.var("LLM_GATEWAY_OUTBOX_DIR").or(raw.outbox_dir).unwrap_or_else(|| DEFAULT_OUTBOX_DIR.into()),
    );
    let replica = replica_name(&env.var("POD_NAME").unwrap_or_else(|| hostname(env)));
    let adopt_interval = raw.adopt_interval.unwrap_or(DEFAULT_ADOPT_INTERVAL);
    if adopt_interval < Duration::from_millis(100) {
        return Err(err("adopt_interval", "must be at least 100ms".into()));
    }
    let dead_letter_max_bytes = raw.dead_letter_max_bytes.map(|b| b.0).unwrap_or(DEFAULT_DEAD_LETTER_MAX_BYTES);
    if dead_letter_max_bytes < 8192 {
        return Err(err("dead_letter_max_bytes", "must be at least 8KiB".into()));
    }
    let fsync = fsync_mode(raw.fsync.as_deref(), raw.fsync_interval)?;
    let (segment_bytes, max_outbox_bytes) = outbox_sizes(raw.segment_bytes, raw.max_outbox_bytes)?;
    let when_full = match raw.when_full.as_deref().unwrap_or("reject") {
        "reject" => WhenFull::Reject,
        "drop" => WhenFull::Drop,
        other => return Err(err("when_full", format!("unknown value {other:?} (expected reject or drop)"))),
    };
    let queue_capacity = raw.queue_capacity.unwrap_or(65_536);
    if queue_capacity < 64 {
        return Err(err("queue_capacity", "must be at least 64".into()));
    }
    let (batch_max_events, batch_max_bytes, batch_max_wait) = batch_limits(raw.batch.unwrap_or_default())?;
    let (retry_initial, retry_max) = retry_backoff(raw.retry.unwrap_or_default())?;
    for (model, spec) in &raw.tokenizers {
        if spec.trim().is_empty() {
            return Err(err(&format!("tokenizers.{model}"), "must not be empty".into()));
        }
    }
    let default_tokenizer = raw.default_tokenizer.unwrap_or_else(|| DEFAULT_TOKENIZER.into());
    Ok(Some(MeteringSettings {
        openmeter,
        event_type,
        subject,
        source,
        outbox_dir,
        replica,
        adopt_interval,
        dead_letter_max_bytes,
        fsync,
        segment_bytes,
        max_outbox_bytes,
        when_full,
        queue_capacity,
        batch_max_events,
        batch_max_bytes,
        batch_max_wait,
        retry_initial,
        retry_max,
        flush_timeout: raw.flush_timeout.unwrap_or(Duration::from_secs(5)),
        tokenizers: raw.tokenizers,
        default_tokenizer,
    }))
}

/// An error naming the field under `metering.`.
fn err(field: &str, msg: String) -> ConfigError {
    ConfigError(format!("metering.{field}: {msg}"))
}

/// `metering.openmeter`: the ingest endpoint (`OPENMETER_URL` wins over the file), its token
/// (from `token_env`, else `OPENMETER_TOKEN`) and the request timeout.
fn openmeter_settings(
    om: RawOpenMeter,
    env_url: Option<String>,
    env: &dyn Env,
    warnings: &mut Vec<String>,
) -> Result<OpenMeterSettings, ConfigError> {
    let url = env_url
        .or(om.url)
        .ok_or_else(|| err("openmeter.url", "required when metering is enabled (or set OPENMETER_URL)".into()))?;
    let url = url.trim_end_matches('/').to_owned();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(err("openmeter.url", format!("{url:?} must start with http:// or https://")));
    }
    let path = om.path.unwrap_or_else(|| DEFAULT_PATH.into());
    if !path.starts_with('/') {
        return Err(err("openmeter.path", format!("{path:?} must start with /")));
    }
    let endpoint = format!("{url}{path}");
    if reqwest::Url::parse(&endpoint).is_err() {
        return Err(err("openmeter", format!("{endpoint:?} is not a valid URL")));
    }
    let token = match &om.token_env {
        None => env.var("OPENMETER_TOKEN").map(Secret::new),
        Some(var) => match env.var(var) {
            Some(t) => Some(Secret::new(t)),
            None => {
                warnings.push(format!(
                    "metering.openmeter.token_env: environment variable {var} is not set; events are sent without a token"
                ));
                None
            }
        },
    };
    let timeout = om.timeout.unwrap_or(Duration::from_secs(10));
    if timeout.is_zero() {
        return Err(err("openmeter.timeout", "must be greater than 0".into()));
    }
    Ok(OpenMeterSettings { endpoint, token, timeout })
}

/// `metering.subject`: which identity an event is billed to (default `team`).
fn subject_from(subject: Option<&str>) -> Result<SubjectFrom, ConfigError> {
    match subject.unwrap_or("team") {
        "team" => Ok(SubjectFrom::Team),
        "key_id" => Ok(SubjectFrom::KeyId),
        other => Err(err("subject", format!("unknown value {other:?} (expected team or key_id)"))),
    }
}

/// `metering.source`: a URI reference without spaces (default `llm-gateway/<hostname>`).
fn event_source(source: Option<String>, env: &dyn Env) -> Result<String, ConfigError> {
    let source = match source {
        Some(s) => s,
        None => format!("llm-gateway/{}", hostname(env)),
    };
    if source.is_empty() || source.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err("source", format!("{source:?} must be a non-empty URI reference without spaces")));
    }
    Ok(source)
}

/// `metering.fsync` (default `interval`, every `fsync_interval`, at least 1ms).
fn fsync_mode(fsync: Option<&str>, interval: Option<Duration>) -> Result<Fsync, ConfigError> {
    match fsync.unwrap_or("interval") {
        "always" => Ok(Fsync::Always),
        "interval" => Ok(Fsync::Interval(interval.unwrap_or(Duration::from_secs(1)).max(Duration::from_millis(1)))),
        "never" => Ok(Fsync::Never),
        other => Err(err("fsync", format!("unknown value {other:?} (expected always, interval or never)"))),
    }
}

/// `metering.segment_bytes` and `metering.max_outbox_bytes` (at least two segments).
fn outbox_sizes(segment: Option<ByteSize>, max_outbox: Option<ByteSize>) -> Result<(u64, u64), ConfigError> {
    let segment_bytes = segment.map(|b| b.0).unwrap_or(16 << 20);
    if segment_bytes < 4096 {
        return Err(err("segment_bytes", "must be at least 4096".into()));
    }
    let max_outbox_bytes = max_outbox.map(|b| b.0).unwrap_or(1 << 30);
    if max_outbox_bytes < 2 * segment_bytes {
        return Err(err("max_outbox_bytes", format!("must be at least twice segment_bytes ({segment_bytes})")));
    }
    Ok((segment_bytes, max_outbox_bytes))
}

/// `metering.batch`: events and bytes per POST, and how long a partial batch waits.
fn batch_limits(batch: RawBatch) -> Result<(usize, usize, Duration), ConfigError> {
    let max_events = batch.max_events.unwrap_or(500);
    if max_events == 0 {
        return Err(err("batch.max_events", "must be at least 1".into()));
    }
    let max_bytes = usize::try_from(batch.max_bytes.map(|b| b.0).unwrap_or(1 << 20))
        .map_err(|_| err("batch.max_bytes", "too large".into()))?;
    if max_bytes < 1024 {
        return Err(err("batch.max_bytes", "must be at least 1024".into()));
    }
    Ok((max_events, max_bytes, batch.max_wait.unwrap_or(Duration::from_secs(1))))
}

/// `metering.retry`: the first and the largest backoff between delivery attempts.
fn retry_backoff(retry: RawMeterRetry) -> Result<(Duration, Duration), ConfigError> {
    let initial = retry.initial_backoff.unwrap_or(Duration::from_millis(500));
    let max = retry.max_backoff.unwrap_or(Duration::from_secs(60));
    if initial.is_zero() || max < initial {
        return Err(err("retry.max_backoff", "must be at least initial_backoff, which must be above 0".into()));
    }
    Ok((initial, max))
}

/// A replica name as one safe path component: a pod name or hostname passes unchanged; anything
/// else becomes `_` (no separators, no `.`/`..`).
fn replica_name(name: &str) -> String {
    let cleaned: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect();
    if cleaned.chars().all(|c| c == '.') { format!("replica{}", cleaned.replace('.', "_")) } else { cleaned }
}

/// The host's name, for a stable default `source` (a pod name in Kubernetes).
fn hostname(env: &dyn Env) -> String {
    env.var("HOSTNAME")
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_owned()))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(yaml: &str) -> Result<Option<MeteringSettings>, String> {
        let raw: RawMetering = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
        let env: HashMap<&str, &str> = [("HOSTNAME", "gw-0"), ("OM_TOKEN", "t0k")].into_iter().collect();
        validate(Some(raw), &env, &mut Vec::new()).map_err(|e| e.0)
    }

    #[test]
    fn the_issue_example_gets_sane_defaults() {
        let s = settings(
            "openmeter: { url: 'http://openmeter.metering:8888', token_env: OM_TOKEN }\noutbox_dir: /var/lib/llm-gateway/outbox\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(s.openmeter.endpoint, "http://openmeter.metering:8888/api/v1/events");
        assert_eq!(s.openmeter.token.as_ref().map(Secret::expose), Some("t0k"));
        assert_eq!(s.event_type, "llm.tokens");
        assert_eq!(s.source, "llm-gateway/gw-0");
        assert_eq!(s.subject, SubjectFrom::Team);
        assert_eq!(s.when_full, WhenFull::Reject);
        assert_eq!(s.fsync, Fsync::Interval(Duration::from_secs(1)));
    }

    #[test]
    fn errors_name_the_field() {
        assert!(settings("event_type: x\n").unwrap_err().contains("metering.openmeter.url"));
        assert!(
            settings("openmeter: { url: 'http://x', path: v3 }\n").unwrap_err().contains("metering.openmeter.path")
        );
        assert!(settings("openmeter: { url: 'http://x' }\nsubject: user\n").unwrap_err().contains("metering.subject"));
        assert!(settings("openmeter: { url: 'http://x' }\nwhen_full: wait\n").unwrap_err().contains("when_full"));
        assert!(
            settings("openmeter: { url: 'http://x' }\nmax_outbox_bytes: 1KiB\n").unwrap_err().contains("max_outbox")
        );
        assert!(settings("openmeter: { url: 'http://x' }\nbogus: 1\n").unwrap_err().contains("bogus"));
        assert!(settings("enabled: false\n").unwrap().is_none());
    }

    #[test]
    fn the_charts_environment_turns_metering_on_and_overrides_the_file() {
        let env: HashMap<&str, &str> = [
            ("OPENMETER_URL", "http://openmeter.platform:8888"),
            ("OPENMETER_TOKEN", "tok"),
            ("LLM_GATEWAY_OUTBOX_DIR", "/data/outbox"),
        ]
        .into_iter()
        .collect();
        let s = validate(None, &env, &mut Vec::new()).unwrap().unwrap();
        assert_eq!(s.openmeter.endpoint, "http://openmeter.platform:8888/api/v1/events");
        assert_eq!(s.openmeter.token.as_ref().map(Secret::expose), Some("tok"));
        assert_eq!(s.outbox_dir, PathBuf::from("/data/outbox"));
        let off = RawMetering { enabled: Some(false), ..Default::default() };
        assert!(validate(Some(off), &env, &mut Vec::new()).unwrap().is_none());
        assert!(validate(None, &HashMap::<&str, &str>::new(), &mut Vec::new()).unwrap().is_none());
    }

    #[test]
    fn each_replica_gets_its_own_directory_in_outbox_dir() {
        let s = settings("openmeter: { url: 'http://x' }\noutbox_dir: /data/outbox\n").unwrap().unwrap();
        assert_eq!((s.replica.as_str(), s.replica_dir()), ("gw-0", PathBuf::from("/data/outbox/gw-0")), "the hostname");
        assert_eq!(s.adopt_interval, DEFAULT_ADOPT_INTERVAL);
        assert_eq!(s.dead_letter_max_bytes, DEFAULT_DEAD_LETTER_MAX_BYTES);
        let env: HashMap<&str, &str> =
            [("OPENMETER_URL", "http://x"), ("POD_NAME", "llm-gateway-7d9f-abcde"), ("HOSTNAME", "h")].into();
        let s = validate(None, &env, &mut Vec::new()).unwrap().unwrap();
        assert_eq!(s.replica_dir(), PathBuf::from(DEFAULT_OUTBOX_DIR).join("llm-gateway-7d9f-abcde"), "POD_NAME wins");
        assert_eq!(replica_name("a/../b c"), "a_.._b_c");
        assert_eq!(replica_name(".."), "replica__");
        let s = settings("openmeter: { url: 'http://x' }\nadopt_interval: 2s\ndead_letter_max_bytes: 1MiB\n")
            .unwrap()
            .unwrap();
        assert_eq!((s.adopt_interval, s.dead_letter_max_bytes), (Duration::from_secs(2), 1 << 20));
        assert!(
            settings("openmeter: { url: 'http://x' }\nadopt_interval: 1ms\n").unwrap_err().contains("adopt_interval")
        );
        assert!(
            settings("openmeter: { url: 'http://x' }\ndead_letter_max_bytes: 100\n")
                .unwrap_err()
                .contains("dead_letter_max_bytes")
        );
    }

    #[test]
    fn sizes_take_units() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("1TiB").is_err());
    }
}
