//! `GET /api/v1/stream`: Server-Sent Events, a `record` event per flush (with the filters of
//! `/api/v1/latest`) and an `alert` event per alert event. Each client has a bounded queue;
//! one that falls behind it is disconnected and counted, never waited for.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use super::handlers::{Filter, error};
use super::state::{ApiState, StreamItem};
use crate::record::{Filtered, Metric};

/// A comment line sent when nothing else was, so a dead client is noticed.
const KEEPALIVE: Duration = Duration::from_secs(15);

pub(super) async fn stream(State(state): State<Arc<ApiState>>, request: Request) -> Response {
    let filter = match Filter::parse(request.uri().query()) {
        Ok(filter) => filter,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let mut items = state.subscribe();
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(state.stream_queue);
    let filter = Arc::new(filter);
    tokio::spawn(async move {
        // The first bytes open the stream for the client at once.
        if tx
            .send(Ok(Bytes::from_static(b": tallyd stream\n\n")))
            .await
            .is_err()
        {
            return;
        }
        loop {
            let item = tokio::select! {
                item = items.recv() => item,
                _ = tokio::time::sleep(KEEPALIVE) => {
                    if !offer(&tx, &state, Bytes::from_static(b": keepalive\n\n")) {
                        return;
                    }
                    continue;
                }
            };
            let event = match item {
                Ok(item) => item,
                Err(RecvError::Lagged(_)) => {
                    slow(&state);
                    return;
                }
                Err(RecvError::Closed) => return,
            };
            let filter = filter.clone();
            let encoded = tokio::task::spawn_blocking(move || encode(&event, &filter)).await;
            let Ok(Some(bytes)) = encoded else {
                continue;
            };
            if !offer(&tx, &state, bytes) {
                return;
            }
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// Queues `bytes` for the client; false when it is gone or too far behind (then counted).
fn offer(tx: &mpsc::Sender<Result<Bytes, std::io::Error>>, state: &ApiState, bytes: Bytes) -> bool {
    match tx.try_send(Ok(bytes)) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            slow(state);
            false
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

fn slow(state: &ApiState) {
    state.telemetry.stream_client_dropped();
    tracing::warn!("api: a stream client fell behind its queue and was disconnected");
}

/// One event in the SSE framing (`event:`, one `data:` line of JSON, a blank line).
fn encode(item: &StreamItem, filter: &Filter) -> Option<Bytes> {
    let (name, json) = match item {
        StreamItem::Record(record) => {
            let keep = |m: &Metric| filter.keeps(m);
            let json = serde_json::to_vec(&Filtered {
                record,
                keep: &keep,
            });
            ("record", json)
        }
        StreamItem::Alert(event) => ("alert", serde_json::to_vec(&**event)),
    };
    let json = json.ok()?;
    let mut out = Vec::with_capacity(json.len() + 32);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(&json);
    out.extend_from_slice(b"\n\n");
    Some(Bytes::from(out))
}
