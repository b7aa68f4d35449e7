//! The routes: small handlers over [`ApiState`]. Errors are `{"error": "..."}` with the
//! status that fits (400 bad parameter, 401 token, 404 path, 405 method, 503 not yet).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;

use super::state::ApiState;
use super::stream;
use crate::export::exposition::{self, Format};
use crate::glob::Glob;
use crate::history::store::StoreError;
use crate::history::{self, QueryError, output};
use crate::protocol::MetricKind;
use crate::record::{Filtered, Metric};

/// The longest a scrape may wait for a slow client to take the next chunk.
const SCRAPE_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Query strings longer than this are refused.
const MAX_QUERY_BYTES: usize = 8 * 1024;

/// Every route, with the token check in front of all but the health checks.
pub(super) fn router(state: Arc<ApiState>) -> Router {
    let guarded = Router::new()
        .route("/metrics", get(metrics))
        .route("/api/v1/latest", get(latest))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/stream", get(stream::stream))
        .route("/api/v1/query", get(query))
        .route("/-/reload", post(reload))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize));
    Router::new()
        .route("/healthz", get(healthy))
        .route("/-/healthy", get(healthy))
        .route("/readyz", get(ready))
        .route("/-/ready", get(ready))
        .merge(guarded)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// A JSON error answer.
pub(super) fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    let body = serde_json::json!({ "error": message.to_string() }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such path")
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this path",
    )
}

async fn authorize(State(state): State<Arc<ApiState>>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
            let mut response = error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    if request
        .uri()
        .query()
        .is_some_and(|q| q.len() > MAX_QUERY_BYTES)
    {
        return error(StatusCode::BAD_REQUEST, "query string too long");
    }
    next.run(request).await
}

/// Compares without stopping at the first difference, so timing tells nothing of the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn healthy() -> Response {
    (StatusCode::OK, "ok\n").into_response()
}

async fn ready(State(state): State<Arc<ApiState>>) -> Response {
    if state.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "listeners are not bound yet",
        )
    }
}

/// The exposition of the last flush, streamed in chunks rendered on a blocking thread.
async fn metrics(State(state): State<Arc<ApiState>>, request: Request) -> Response {
    let accept = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    let Some(view) = state.view() else {
        // Before the first flush: only the format's end, so a scrape is valid and empty.
        let body = if format == Format::OpenMetrics {
            "# EOF\n"
        } else {
            ""
        };
        return ([(header::CONTENT_TYPE, format.content_type())], body).into_response();
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        exposition::encode(&view, format, &mut |chunk| {
            let sent =
                handle.block_on(tx.send_timeout(Ok(Bytes::from(chunk)), SCRAPE_WRITE_TIMEOUT));
            sent.is_ok()
        });
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (
        [(header::CONTENT_TYPE, format.content_type())],
        Body::from_stream(stream),
    )
        .into_response()
}

/// The filters of `/api/v1/latest` and `/api/v1/stream`.
pub(super) struct Filter {
    metric: Option<Glob>,
    tags: Vec<(String, String)>,
    kind: Option<MetricKind>,
}

impl Filter {
    /// Reads `metric=<glob>`, `tag=<key>:<value>` (repeatable) and `type=<type>`.
    ///
    /// # Errors
    /// An unknown parameter or a bad value, as a message for a 400.
    pub(super) fn parse(query: Option<&str>) -> Result<Filter, String> {
        let mut filter = Filter {
            metric: None,
            tags: Vec::new(),
            kind: None,
        };
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match &*key {
                "metric" => {
                    filter.metric = Some(Glob::new(&value).map_err(|e| format!("metric: {e}"))?)
                }
                "tag" => {
                    let (k, v) = value.split_once(':').unwrap_or((&value, ""));
                    if k.is_empty() {
                        return Err(format!("tag {value:?}: use key:value"));
                    }
                    filter.tags.push((k.to_string(), v.to_string()));
                }
                "type" => {
                    let kind = MetricKind::ALL
                        .into_iter()
                        .find(|k| k.as_str() == value)
                        .ok_or_else(|| {
                            format!("type {value:?}: use counter, gauge, timer, histogram, distribution or set")
                        })?;
                    filter.kind = Some(kind);
                }
                other => {
                    return Err(format!(
                        "unknown parameter {other:?}: use metric, tag or type"
                    ));
                }
            }
        }
        Ok(filter)
    }

    /// Whether `metric` passes every filter.
    pub(super) fn keeps(&self, metric: &Metric) -> bool {
        self.metric
            .as_ref()
            .is_none_or(|g| g.matches(metric.key.name()))
            && self.kind.is_none_or(|k| k == metric.kind())
            && self
                .tags
                .iter()
                .all(|(k, v)| metric.key.tags().any(|(mk, mv)| mk == k && mv == v))
    }
}

async fn latest(State(state): State<Arc<ApiState>>, request: Request) -> Response {
    let filter = match Filter::parse(request.uri().query()) {
        Ok(filter) => filter,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let Some(view) = state.view() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "no flush yet");
    };
    let body = tokio::task::spawn_blocking(move || {
        let keep = |m: &Metric| filter.keeps(m);
        serde_json::to_vec(&Filtered {
            record: view.record(),
            keep: &keep,
        })
    })
    .await;
    match body {
        Ok(Ok(body)) => json_bytes(body),
        _ => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "could not encode the record",
        ),
    }
}

async fn alerts(State(state): State<Arc<ApiState>>, request: Request) -> Response {
    if request.uri().query().is_some_and(|q| !q.is_empty()) {
        return error(
            StatusCode::BAD_REQUEST,
            "/api/v1/alerts takes no parameters",
        );
    }
    let firing = state
        .view()
        .map(|v| serde_json::to_vec(&v.record().firing))
        .unwrap_or_else(|| Ok(b"[]".to_vec()));
    match firing {
        Ok(body) => json_bytes(body),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "could not encode the alerts",
        ),
    }
}

async fn reload(State(state): State<Arc<ApiState>>) -> Response {
    match state.reload().await {
        Ok(()) => json_bytes(br#"{"status":"reloaded"}"#.to_vec()),
        Err(message) => error(StatusCode::BAD_REQUEST, message),
    }
}

/// History (SPEC §9): the parameters of `tallyd query`, answered by the same engine from
/// the store, read-only, on a blocking thread.
async fn query(State(state): State<Arc<ApiState>>, request: Request) -> Response {
    let (params, format) = match query_params(request.uri().query()) {
        Ok(parsed) => parsed,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let Some(path) = state.history.clone() else {
        return error(
            StatusCode::NOT_FOUND,
            "history is off: set [history] path in the config",
        );
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let query = match params.validate(now) {
        Ok(query) => query,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let answer = tokio::task::spawn_blocking(move || history::query::run(&path, &query)).await;
    match answer {
        Ok(Ok(answer)) => {
            let (content_type, body) = match format {
                output::Format::Json => ("application/json", output::render(&answer, format)),
                output::Format::Csv => ("text/csv; charset=utf-8", output::render(&answer, format)),
                output::Format::Table => {
                    ("text/plain; charset=utf-8", output::render(&answer, format))
                }
            };
            ([(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        Ok(Err(QueryError::Invalid(message))) => error(StatusCode::BAD_REQUEST, message),
        Ok(Err(QueryError::Store(e @ StoreError::Invalid { .. }))) => {
            error(StatusCode::SERVICE_UNAVAILABLE, e)
        }
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "the query failed"),
    }
}

/// `metric`, `tag` (repeatable, `KEY=VALUE` or `KEY:VALUE`), `stat`, `from`, `to`, `step`,
/// `points`, `agg`, `group_by`, `format` (json by default) and `list`.
fn query_params(query: Option<&str>) -> Result<(history::QueryParams, output::Format), String> {
    let mut params = history::QueryParams::default();
    let mut format = output::Format::Json;
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let value = value.into_owned();
        match &*key {
            "metric" => params.metric = Some(value),
            "tag" => params.tags.push(value),
            "stat" => params.stat = Some(value),
            "from" => params.from = Some(value),
            "to" => params.to = Some(value),
            "step" => params.step = Some(value),
            "points" => params.points = Some(value),
            "agg" => params.agg = Some(value),
            "group_by" | "group-by" => params.group_by = Some(value),
            "format" => format = output::Format::parse(&value)?,
            "list" => {
                params.list = match value.as_str() {
                    "" | "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err(format!("list {value:?}: use true or false")),
                }
            }
            other => {
                return Err(format!(
                    "unknown parameter {other:?}: use metric, tag, stat, from, to, step, points, \
                     agg, group_by, format or list"
                ));
            }
        }
    }
    Ok((params, format))
}

fn json_bytes(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}
