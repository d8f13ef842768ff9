//! The schema, made and migrated by the gateway: versioned migrations applied in one
//! transaction under an advisory lock (replicas starting together take turns; the second finds
//! the work done), the table partitioned by UTC day, and retention as dropped partitions.

use tokio_postgres::Client;

/// Migrations in order; `{schema}` is replaced by the configured schema. Never edit one that has
/// shipped: add the next.
const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    "CREATE TABLE {schema}.requests (
        time timestamptz NOT NULL,
        request_id text NOT NULL,
        trace_id text,
        team text,
        key_id text,
        subject text,
        endpoint text NOT NULL,
        model text NOT NULL,
        deployment text,
        attempts integer NOT NULL,
        status integer NOT NULL,
        error text,
        stream boolean NOT NULL,
        cache text,
        input_tokens bigint,
        output_tokens bigint,
        cached_tokens bigint,
        cache_write_tokens bigint,
        reasoning_tokens bigint,
        cost_nanodollars bigint,
        latency_ms double precision NOT NULL,
        ttft_ms double precision,
        client_addr inet,
        user_agent text,
        request_body text,
        response_body text,
        PRIMARY KEY (time, request_id)
    ) PARTITION BY RANGE (time);
    -- /admin/requests filtered by team, key or model, newest first (keyset on time, request_id).
    CREATE INDEX requests_team_time ON {schema}.requests (team, time DESC, request_id DESC);
    CREATE INDEX requests_key_time ON {schema}.requests (key_id, time DESC, request_id DESC);
    CREATE INDEX requests_model_time ON {schema}.requests (model, time DESC, request_id DESC);",
)];

/// The advisory lock key of the schema's DDL (migrations, partitions, retention).
pub fn lock_key(schema: &str) -> i64 {
    // FNV-1a: stable across releases and replicas, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in b"llm-gateway request_log ".iter().chain(schema.as_bytes()) {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash as i64
}

/// Applies the migrations this database lacks. Returns the versions applied.
pub async fn migrate(client: &mut Client, schema: &str) -> Result<Vec<i32>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key(schema)]).await?;
    tx.batch_execute(&format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
             version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
    ))
    .await?;
    let done: Vec<i32> = tx
        .query(&format!("SELECT version FROM {schema}.schema_migrations"), &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut applied = Vec::new();
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| !done.contains(v)) {
        tx.batch_execute(&sql.replace("{schema}", schema)).await?;
        tx.execute(&format!("INSERT INTO {schema}.schema_migrations (version) VALUES ($1)"), &[version]).await?;
        applied.push(*version);
    }
    tx.commit().await?;
    Ok(applied)
}

/// The partition of `day` (`YYYY-MM-DD`, validated by the caller's parse).
pub fn partition_name(day: &str) -> String {
    format!("requests_p{}", day.replace('-', ""))
}

/// Makes the partitions of `days` that do not exist yet (under the lock: two replicas making
/// the same one would otherwise collide).
pub async fn ensure_partitions(
    client: &mut Client,
    schema: &str,
    days: &[String],
) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key(schema)]).await?;
    for day in days {
        if !valid_day(day) {
            continue;
        }
        let (name, next) = (partition_name(day), next_day(day));
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {schema}.{name} PARTITION OF {schema}.requests
             FOR VALUES FROM ('{day} 00:00:00+00') TO ('{next} 00:00:00+00')"
        ))
        .await?;
    }
    tx.commit().await
}

/// Drops the day partitions wholly older than `retention_days` (today counts as one). Returns
/// the partitions dropped.
pub async fn apply_retention(
    client: &mut Client,
    schema: &str,
    retention_days: u32,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key(schema)]).await?;
    let rows = tx
        .query(
            "SELECT c.relname FROM pg_inherits i
             JOIN pg_class c ON c.oid = i.inhrelid
             JOIN pg_class p ON p.oid = i.inhparent
             JOIN pg_namespace n ON n.oid = p.relnamespace
             WHERE n.nspname = $1 AND p.relname = 'requests'
               AND c.relname < 'requests_p' || to_char((now() AT TIME ZONE 'UTC')::date - $2::integer + 1, 'YYYYMMDD')",
            &[&schema, &(retention_days as i32)],
        )
        .await?;
    let mut dropped = Vec::new();
    for row in rows {
        let name: String = row.get(0);
        tx.batch_execute(&format!("DROP TABLE IF EXISTS {schema}.{name}")).await?;
        dropped.push(name);
    }
    tx.commit().await?;
    Ok(dropped)
}

fn valid_day(day: &str) -> bool {
    let b = day.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

/// The day after `day` (`YYYY-MM-DD`, valid).
pub fn next_day(day: &str) -> String {
    let number = |range: std::ops::Range<usize>| day.get(range).and_then(|s| s.parse::<u32>().ok()).unwrap_or(1);
    let (mut year, mut month, mut date) = (number(0..4), number(5..7), number(8..10) + 1);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let length = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if date > length {
        date = 1;
        month += 1;
        if month > 12 {
            month = 1;
            year += 1;
        }
    }
    format!("{year:04}-{month:02}-{date:02}")
}
