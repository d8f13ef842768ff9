//! The request log on the admin API (admin credential, as `/admin/keys`), answered from
//! PostgreSQL: `GET /admin/requests` (newest first, keyset pagination on (time, request id))
//! and `GET /admin/usage` (requests, errors, tokens and cost grouped by team, key, model,
//! deployment and/or day).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

use super::deliver::{connect, describe};
use crate::api::ErrorBody;
use crate::config::request_log::RequestLogSettings;

const QUERY_TIMEOUT: Duration = Duration::from_secs(15);
pub const MAX_LIMIT: i64 = 1000;

/// Whether a request carries the admin credential (`None`: no admin API).
pub type IsAdmin = Box<dyn Fn(&HeaderMap) -> Option<bool> + Send + Sync>;

pub struct Admin {
    is_admin: IsAdmin,
    /// `None`: the request log is off.
    db: Option<Db>,
}

struct Db {
    url: crate::config::Secret,
    schema: String,
    client: tokio::sync::Mutex<Option<Arc<Client>>>,
}

impl Admin {
    pub fn new(settings: Option<&RequestLogSettings>, is_admin: IsAdmin) -> Arc<Self> {
        let db = settings.map(|s| Db { url: s.url.clone(), schema: s.schema.clone(), client: Default::default() });
        Arc::new(Admin { is_admin, db })
    }
}

/// An answer other than the data: the status, the error code and the message.
pub struct Refusal(StatusCode, &'static str, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let Refusal(status, code, message) = self;
        let kind = if status.is_server_error() { "service_unavailable_error" } else { "invalid_request_error" };
        (status, axum::Json(ErrorBody::new(message, kind, None, Some(code)))).into_response()
    }
}

fn error(status: StatusCode, code: &'static str, message: String) -> Refusal {
    Refusal(status, code, message)
}

impl Admin {
    fn check(&self, headers: &HeaderMap) -> Result<&Db, Refusal> {
        match (self.is_admin)(headers) {
            None => Err(error(StatusCode::NOT_FOUND, "admin_disabled", "The admin API is not enabled.".into())),
            Some(false) => {
                Err(error(StatusCode::UNAUTHORIZED, "invalid_admin_key", "Missing or incorrect admin key.".into()))
            }
            Some(true) => self.db.as_ref().ok_or_else(|| {
                error(StatusCode::NOT_FOUND, "request_log_disabled", "The request log is not enabled.".into())
            }),
        }
    }
}

impl Db {
    async fn client(&self) -> Result<Arc<Client>, Refusal> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(client.clone());
        }
        let client = Arc::new(connect(self.url.expose()).await.map_err(unavailable)?);
        *slot = Some(client.clone());
        Ok(client)
    }

    /// Runs `sql`; each row's first column is a JSON text.
    async fn query(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<tokio_postgres::Row>, Refusal> {
        let client = self.client().await?;
        match tokio::time::timeout(QUERY_TIMEOUT, client.query(sql, params)).await {
            Ok(Ok(rows)) => Ok(rows),
            Ok(Err(e)) => Err(match e.as_db_error().map(|d| d.code().code()) {
                // Data exceptions: a `since` that is not a time, and the like.
                Some(code) if code.starts_with("22") => error(StatusCode::BAD_REQUEST, "invalid_query", describe(&e)),
                _ => unavailable(e),
            }),
            Err(_) => Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "request_log_timeout",
                format!("The request log did not answer within {}s.", QUERY_TIMEOUT.as_secs()),
            )),
        }
    }
}

fn unavailable(e: tokio_postgres::Error) -> Refusal {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "request_log_unavailable",
        format!("The request log cannot be reached: {}", describe(&e)),
    )
}

fn bad(message: String) -> Refusal {
    error(StatusCode::BAD_REQUEST, "invalid_query", message)
}

/// The query string's pairs, percent-decoded (`+` is a space).
pub fn query_pairs(uri: &Uri) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    match u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"), 16) {
                        Ok(b) => {
                            out.push(b);
                            i += 2;
                        }
                        Err(_) => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    let query = uri.query().unwrap_or_default();
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

/// The columns `/admin/requests` shows, in order.
const COLUMNS: &str = "request_id, time, trace_id, team, key_id, subject, endpoint, model, deployment, attempts, \
     status, error, stream, cache, input_tokens, output_tokens, cached_tokens, cache_write_tokens, \
     reasoning_tokens, cost_nanodollars, latency_ms, ttft_ms, host(client_addr) AS client_addr, user_agent, \
     request_body, response_body";

/// `/admin/requests`' query: SQL conditions over numbered text parameters, then the status.
#[derive(Default)]
struct Filter {
    texts: Vec<String>,
    conditions: Vec<String>,
    status: Option<i32>,
    limit: i64,
}

impl Filter {
    fn parse(uri: &Uri) -> Result<Filter, Refusal> {
        let mut filter = Filter { limit: 100, ..Filter::default() };
        for (name, value) in query_pairs(uri) {
            let condition = match name.as_str() {
                "team" => "team = $",
                "key" => "key_id = $",
                "model" => "model = $",
                "since" => "time >= $",
                "until" => "time < $",
                "status" => {
                    let n = value.parse().map_err(|_| bad(format!("status: {value:?} is not a number")))?;
                    filter.status = Some(n);
                    continue;
                }
                "limit" => {
                    filter.limit = value
                        .parse::<i64>()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| bad(format!("limit: must be a number from 1 to {MAX_LIMIT}")))?;
                    continue;
                }
                "cursor" => {
                    let (time, id) =
                        value.split_once('~').ok_or_else(|| bad("cursor: not a cursor this endpoint gave".into()))?;
                    filter.texts.extend([time.to_owned(), id.to_owned()]);
                    let n = filter.texts.len();
                    filter.conditions.push(format!("(time, request_id) < (${}::text::timestamptz, ${n})", n - 1));
                    continue;
                }
                other => {
                    return Err(bad(format!(
                        "unknown parameter {other:?} (team, key, model, status, since, until, limit, cursor)"
                    )));
                }
            };
            filter.texts.push(value);
            let cast = if condition.starts_with("time") { "::text::timestamptz" } else { "" };
            filter.conditions.push(format!("{condition}{}{cast}", filter.texts.len()));
        }
        Ok(filter)
    }
}

/// `GET /admin/requests?team=&key=&model=&status=&since=&until=&limit=&cursor=`: newest first;
/// `next_cursor` fetches the page after (absent on the last page).
pub async fn requests(State(admin): State<Arc<Admin>>, headers: HeaderMap, uri: Uri) -> Response {
    let (db, mut filter) = match admin.check(&headers).and_then(|db| Ok((db, Filter::parse(&uri)?))) {
        Ok(found) => found,
        Err(refusal) => return refusal.into_response(),
    };
    let mut params: Vec<&(dyn ToSql + Sync)> = filter.texts.iter().map(|t| t as &(dyn ToSql + Sync)).collect();
    if let Some(status) = &filter.status {
        params.push(status);
        filter.conditions.push(format!("status = ${}", params.len()));
    }
    let fetch = filter.limit + 1;
    params.push(&fetch);
    let conditions = &filter.conditions;
    let filter_sql = if conditions.is_empty() { String::new() } else { format!("WHERE {}", conditions.join(" AND ")) };
    let sql = format!(
        "SELECT row_to_json(t)::text, to_char(t.time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), t.request_id
         FROM (SELECT {COLUMNS} FROM {schema}.requests {filter_sql}
               ORDER BY time DESC, request_id DESC LIMIT ${n}) t
         ORDER BY t.time DESC, t.request_id DESC",
        schema = db.schema,
        n = params.len()
    );
    let rows = match db.query(&sql, &params).await {
        Ok(rows) => rows,
        Err(refusal) => return refusal.into_response(),
    };
    let page = &rows[..rows.len().min(filter.limit as usize)];
    let mut body = String::from("{\"object\":\"list\",\"data\":[");
    for (i, row) in page.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(row.get::<_, &str>(0));
    }
    body.push(']');
    if let Some(last) = page.last().filter(|_| rows.len() > page.len()) {
        let cursor = format!("{}~{}", last.get::<_, &str>(1), last.get::<_, &str>(2));
        body.push_str(&format!(",\"next_cursor\":{}", serde_json::Value::from(cursor)));
    }
    body.push('}');
    ([(http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `GET /admin/usage?group_by=team,model,day&since=&until=`: requests, errors, tokens and cost
/// per group; `since` defaults to 7 days ago, `until` to now. Errors are failed requests (a
/// client that went away is not one).
pub async fn usage(State(admin): State<Arc<Admin>>, headers: HeaderMap, uri: Uri) -> Response {
    let db = match admin.check(&headers) {
        Ok(db) => db,
        Err(refusal) => return refusal.into_response(),
    };
    let (mut groups, mut since, mut until) = (Vec::new(), None, None);
    for (name, value) in query_pairs(&uri) {
        match name.as_str() {
            "group_by" => {
                for group in value.split(',').map(str::trim).filter(|g| !g.is_empty()) {
                    groups.push(match group {
                        "team" => "team",
                        "key" => "key_id",
                        "model" => "model",
                        "deployment" => "deployment",
                        "day" => "to_char(time AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day",
                        other => {
                            return bad(format!("group_by: unknown {other:?} (team, key, model, deployment, day)"))
                                .into_response();
                        }
                    });
                }
            }
            "since" => since = Some(value),
            "until" => until = Some(value),
            other => return bad(format!("unknown parameter {other:?} (group_by, since, until)")).into_response(),
        }
    }
    let keys: Vec<&str> = groups.iter().map(|g| g.rsplit(' ').next().unwrap_or(*g)).collect();
    let (select, group_by) = match groups.is_empty() {
        true => (String::new(), String::new()),
        false => (format!("{},", groups.join(", ")), format!("GROUP BY {0} ORDER BY {0}", keys.join(", "))),
    };
    let sql = format!(
        "SELECT coalesce(json_agg(row_to_json(u)), '[]')::text FROM (
           SELECT {select} count(*) AS requests,
             count(*) FILTER (WHERE status >= 400 OR (error IS NOT NULL AND error <> 'client_gone')) AS errors,
             coalesce(sum(input_tokens), 0) AS input_tokens, coalesce(sum(output_tokens), 0) AS output_tokens,
             coalesce(sum(cached_tokens), 0) AS cached_tokens,
             coalesce(sum(cache_write_tokens), 0) AS cache_write_tokens,
             coalesce(sum(reasoning_tokens), 0) AS reasoning_tokens, sum(cost_nanodollars) AS cost_nanodollars
           FROM {schema}.requests
           WHERE time >= coalesce($1::text::timestamptz, now() - interval '7 days')
             AND time < coalesce($2::text::timestamptz, now() + interval '1 minute')
           {group_by}) u",
        schema = db.schema
    );
    match db.query(&sql, &[&since, &until]).await {
        Ok(rows) => {
            let data = rows.first().map(|r| r.get::<_, &str>(0)).unwrap_or("[]");
            let body = format!("{{\"object\":\"list\",\"data\":{data}}}");
            ([(http::header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(refusal) => refusal.into_response(),
    }
}
