//! `/api/v1/meetings/{id}/stream`: a meeting's transcript, live, over a WebSocket.
//!
//! A client sends segments as JSON text messages (the shape of `POST .../segments`, one per
//! message). A partial is fanned out to the meeting's viewers through the hub, coalesced per
//! `segment_id` (the latest text of each, every [`COALESCE`]) and never stored. A final goes
//! through `Meetings::add_segments`, the batch endpoint's write path (idempotent on
//! `segment_id`), and is acknowledged to its sender with its `seq`; its viewers get it from the
//! hub, which follows the change log. Every connection is a viewer: it receives the meeting's
//! events (`segment`, `partial`, `insight`, `summary`, `meeting`), after the stored finals above
//! `?after=` when it resumes. Errors are messages with the HTTP API's stable codes, and nothing
//! is stored for a message that fails.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Caller;
use super::error::{ApiPath, ApiQuery};
use super::events::{Feed, Outgoing, close_lagging, send_ws, upgrade};
use crate::app::App;
use crate::auth::Scope;
use crate::error::{Error, ErrorCode, Result};
use crate::events::Topics;
use crate::meetings::{SegmentInput, Status};
use crate::store::{Seq, TenantId};

/// Partials of one segment are fanned out at most this often (the latest text wins).
pub const COALESCE: Duration = Duration::from_millis(100);
/// Partials fanned out per connection and [`COALESCE`] tick; the rest wait for the next tick.
const FLUSH_MAX: usize = 256;
/// Segments with a partial waiting; past this, the oldest waiting partial is dropped (a partial
/// is only ever replaced, by a later one or by its final).
const PENDING_MAX: usize = 1024;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StreamParams {
    /// Resume: first receive the stored final segments with a `seq` above this one (the last
    /// `seq` seen), then the live ones; absent: only what is said from now on.
    #[param(example = 0)]
    pub after: Option<u64>,
}

/// A meeting's transcript over a WebSocket: stream segments in, watch them arrive.
///
/// Upgrade to a WebSocket (`Upgrade: websocket`; browsers pass the key as the subprotocol
/// `nexus.key.<key>` beside `nexus.v1`). Send each segment as a JSON text message, the shape of
/// `POST /api/v1/meetings/{id}/segments`: `{"segment_id", "speaker", "start_ms", "end_ms",
/// "text", "is_final"}` (sending needs the `write` scope). A final is stored (idempotent on
/// `segment_id`) and answered `{"type": "ack", "segment_id", "seq", "status"}`; a partial is
/// fanned out to viewers, coalesced per segment, never stored. Every connection receives the
/// meeting's events as the hub sends them (`segment`, `partial`, `insight`, `summary`,
/// `meeting`); with `?after=SEQ` the stored finals after SEQ come first. A message that fails is
/// answered `{"type": "error", "code", "message"}` with the HTTP API's codes (`invalid_json`,
/// `invalid_request`, `forbidden`, `not_found`, `conflict` once the meeting has ended) and stores
/// nothing. Without an upgrade the route answers 400 (404 for an unknown meeting).
#[utoipa::path(get, path = "/api/v1/meetings/{id}/stream", tag = "meetings",
    params(("id" = String, Path, description = "The meeting's id", example = "mtg_0193c1a2b3c47d5e8f9a0b1c2d3e4f50"),
           StreamParams),
    responses((status = 101, description = "switching to the WebSocket protocol"),
              (status = 400, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn stream(
    State(app): State<Arc<App>>,
    Caller(ctx): Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(params): ApiQuery<StreamParams>,
    ws: std::result::Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response> {
    let tenant = ctx.tenant.clone();
    let Ok(ws) = ws else {
        app.meetings.get(&tenant, &id).await?;
        return Err(Error::invalid("connect with a WebSocket upgrade (Upgrade: websocket) to stream a meeting"));
    };
    let may_write = ctx.has(Scope::Write);
    Ok(upgrade(ws).on_upgrade(move |socket| run(app, tenant, may_write, id, params.after, socket)).into_response())
}

/// Latest partial of each segment not yet fanned out, in arrival order.
#[derive(Default)]
struct Pending(Vec<(String, Value)>);

impl Pending {
    fn put(&mut self, segment_id: &str, value: Value) {
        match self.0.iter_mut().find(|(id, _)| id == segment_id) {
            Some((_, v)) => *v = value,
            None => {
                if self.0.len() >= PENDING_MAX {
                    self.0.remove(0);
                }
                self.0.push((segment_id.to_string(), value));
            }
        }
    }

    fn take(&mut self) -> Vec<(String, Value)> {
        let n = self.0.len().min(FLUSH_MAX);
        self.0.drain(..n).collect()
    }

    fn drop_segment(&mut self, segment_id: &str) {
        self.0.retain(|(id, _)| id != segment_id);
    }
}

async fn run(app: Arc<App>, tenant: TenantId, may_write: bool, id: String, after: Option<Seq>, socket: WebSocket) {
    let timeout = Duration::from_millis(app.events.config().send_timeout_ms);
    let (mut sink, mut inbound) = socket.split();
    let mut feed = Feed::open(&app, tenant.clone(), Topics::one(format!("meeting:{id}")));
    if let Err(e) = app.meetings.get(&tenant, &id).await {
        let _ = send_ws(&mut sink, Outgoing::error(&e, None).ws(), timeout).await;
        let _ = send_ws(&mut sink, Message::Close(None), timeout).await;
        return;
    }
    // Finals up to this seq were sent by the resume; the live ones are skipped up to it.
    let mut replayed: Option<u64> = None;
    if let Some(after) = after {
        match app.meetings.segments(&tenant, &id).await {
            Ok(segments) => {
                for segment in segments.iter().filter(|s| s.seq > after) {
                    let event = app.events.replayed_segment(&tenant, &id, segment);
                    if !send_ws(&mut sink, Outgoing::event(&event).ws(), timeout).await {
                        return;
                    }
                    replayed = Some(segment.seq);
                }
            }
            Err(e) => {
                let _ = send_ws(&mut sink, Outgoing::error(&e, None).ws(), timeout).await;
                return;
            }
        }
    }
    let mut pending = Pending::default();
    let mut flush = tokio::time::interval(COALESCE);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(30), Duration::from_secs(30));
    loop {
        tokio::select! {
            event = feed.next() => match event {
                Some(event) => {
                    let seen = event.kind == "segment"
                        && replayed.is_some_and(|r| event.data["seq"].as_u64().is_some_and(|s| s <= r));
                    if !seen && !send_ws(&mut sink, Outgoing::event(&event).ws(), timeout).await {
                        return;
                    }
                }
                None => {
                    close_lagging(&mut sink, feed.position(), timeout).await;
                    return;
                }
            },
            message = inbound.next() => {
                let text = match message {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Binary(_))) => {
                        let e = Error::invalid("send each segment as a JSON text message");
                        if !send_ws(&mut sink, Outgoing::error(&e, None).ws(), timeout).await {
                            return;
                        }
                        continue;
                    }
                    Some(Ok(_)) => continue,
                };
                let reply = receive(&app, &tenant, &id, may_write, text.as_str(), &mut pending).await;
                if let Some(reply) = reply
                    && !send_ws(&mut sink, reply.ws(), timeout).await
                {
                    return;
                }
            },
            _ = flush.tick() => {
                for (_, partial) in pending.take() {
                    app.events.publish_partial(&tenant, &id, partial, feed.id);
                }
            },
            _ = ping.tick() => {
                if !send_ws(&mut sink, Message::Ping(bytes::Bytes::new()), timeout).await {
                    return;
                }
            }
        }
    }
}

/// Handles one message from the client; returns the answer to it, if any.
async fn receive(
    app: &App,
    tenant: &TenantId,
    id: &str,
    may_write: bool,
    text: &str,
    pending: &mut Pending,
) -> Option<Outgoing> {
    let input = match parse(text) {
        Ok(input) => input,
        Err(e) => return Some(Outgoing::error(&e, None)),
    };
    let segment_id = input.segment_id.clone();
    let refuse = |e: Error| Some(Outgoing::error(&e, Some(&segment_id)));
    if !may_write {
        return refuse(Error::new(
            ErrorCode::Forbidden,
            "this key lacks the `write` scope that sending segments needs; use a key that has it",
        ));
    }
    if let Err(e) = input.validate() {
        return refuse(e);
    }
    if !input.is_final {
        match app.meetings.get(tenant, id).await {
            Ok(m) if m.status == Status::Ended => {
                return refuse(Error::new(
                    ErrorCode::Conflict,
                    format!("meeting {id} has ended; it takes no more segments"),
                ));
            }
            Ok(_) => {}
            Err(e) => return refuse(e),
        }
        let value = json!({"meeting_id": id, "segment_id": input.segment_id, "speaker": input.speaker.trim(),
                           "start_ms": input.start_ms, "end_ms": input.end_ms, "text": input.text.trim(), "is_final": false});
        pending.put(&segment_id, value);
        return None;
    }
    // A final replaces its partials: one not yet fanned out is dropped.
    pending.drop_segment(&segment_id);
    match app.meetings.add_segments(tenant, id, vec![input], false).await {
        Ok(outcome) => {
            let ack = outcome.acks.into_iter().next()?;
            Some(Outgoing::json(
                "ack",
                None,
                json!({"type": "ack", "segment_id": ack.segment_id, "seq": ack.seq, "status": ack.status}),
            ))
        }
        Err(e) => refuse(e),
    }
}

/// One segment: the batch endpoint's shape, optionally tagged `"type": "segment"`.
fn parse(text: &str) -> Result<SegmentInput> {
    let mut value: Value = serde_json::from_str(text)
        .map_err(|e| Error::new(ErrorCode::InvalidJson, format!("the message is not JSON: {e}")))?;
    if let Some(object) = value.as_object_mut()
        && object.get("type").and_then(Value::as_str) == Some("segment")
    {
        object.remove("type");
    }
    serde_json::from_value(value).map_err(|e| {
        Error::invalid(format!(
            "a segment is {{\"segment_id\", \"speaker\", \"start_ms\", \"end_ms\", \"text\", \"is_final\"}}: {e}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_segments() {
        let s = parse(r#"{"type": "segment", "segment_id": "a", "text": "hi", "is_final": false}"#).unwrap();
        assert_eq!((s.segment_id.as_str(), s.is_final), ("a", false));
        assert_eq!(parse("{not json").unwrap_err().code, ErrorCode::InvalidJson);
        assert_eq!(parse(r#"{"segment_id": "a", "txt": "hi"}"#).unwrap_err().code, ErrorCode::InvalidRequest);
        let mut pending = Pending::default();
        pending.put("a", json!(1));
        pending.put("b", json!(2));
        pending.put("a", json!(3));
        pending.drop_segment("b");
        assert_eq!(pending.0, vec![("a".to_string(), json!(3))]);
    }
}
