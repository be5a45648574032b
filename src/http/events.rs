//! `/api/v1/events`: the real-time hub (`crate::events`) over WebSocket, as server-sent events,
//! or as one JSON page of what happened after a position; and what the live meeting stream
//! shares with it: the WebSocket settings, a connection's feed of events, resync and closing.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::auth::{Caller, WS_PROTOCOL};
use super::error::ApiQuery;
use crate::app::App;
use crate::error::{Error, Result};
use crate::events::{CatchUp, Event, Topics};
use crate::store::{Seq, TenantId};

/// Largest message a client may send (one transcript segment).
pub const MAX_MESSAGE: usize = 64 * 1024;
/// How often an idle connection is pinged.
const PING_EVERY: Duration = Duration::from_secs(30);

/// A WebSocket upgrade with Nexus's settings: small buffers (thousands of connections), a bound
/// on what a client may send, and the `nexus.v1` subprotocol echoed when offered.
pub fn upgrade(ws: WebSocketUpgrade) -> WebSocketUpgrade {
    ws.read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .protocols([WS_PROTOCOL])
}

/// One message to a connection.
pub struct Outgoing {
    /// The event's type (the SSE event name).
    pub kind: String,
    /// Its change-log position (the SSE id), when it has one to resume from.
    pub pos: Option<Seq>,
    /// The JSON text.
    pub text: bytes::Bytes,
}

impl Outgoing {
    pub fn event(event: &Event) -> Outgoing {
        Outgoing { kind: event.kind.to_string(), pos: Some(event.pos), text: event.frame() }
    }

    pub fn json(kind: &str, pos: Option<Seq>, value: Value) -> Outgoing {
        Outgoing { kind: kind.to_string(), pos, text: value.to_string().into() }
    }

    /// Reload what you show through the REST API, then follow on from `pos`.
    pub fn resync(pos: Seq, reason: &str) -> Outgoing {
        Outgoing::json("resync", Some(pos), json!({"type": "resync", "pos": pos, "reason": reason}))
    }

    /// An error, with the stable code the HTTP API answers it with (a system failure's detail
    /// stays in the log).
    pub fn error(e: &Error, segment_id: Option<&str>) -> Outgoing {
        let message = if e.code.kind() == "system" {
            tracing::error!(code = e.code.as_str(), error = %e, "stream message failed");
            "internal error; the server log has the details".to_string()
        } else {
            e.message.clone()
        };
        let mut body = json!({"type": "error", "code": e.code.as_str(), "message": message});
        if let Some(id) = segment_id {
            body["segment_id"] = id.into();
        }
        Outgoing::json("error", None, body)
    }

    pub fn ws(self) -> Message {
        Message::Text(Utf8Bytes::try_from(self.text).unwrap_or_else(|_| Utf8Bytes::from_static("{}")))
    }

    fn sse(self) -> SseEvent {
        let event = SseEvent::default().event(self.kind).data(String::from_utf8_lossy(&self.text));
        match self.pos {
            Some(pos) => event.id(pos.to_string()),
            None => event,
        }
    }
}

/// A connection's view of the hub: its tenant's events on its topics, without the logged ones a
/// catch-up already sent. After a lag it yields `resync` once, then ends.
pub struct Feed {
    app: Arc<App>,
    rx: broadcast::Receiver<Arc<Event>>,
    tenant: TenantId,
    topics: Topics,
    /// Logged events at or before this position were already sent (or are before the start).
    pub seen: Seq,
    /// This connection, as the origin of the live events it publishes.
    pub id: u64,
    ended: bool,
}

static CONNECTIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Feed {
    /// Subscribes now; live events start after [`Feed::seen`], the hub's position at this moment.
    pub fn open(app: &Arc<App>, tenant: TenantId, topics: Topics) -> Feed {
        let rx = app.events.subscribe(&topics);
        let seen = app.events.position();
        let id = CONNECTIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Feed { app: app.clone(), rx, tenant, topics, seen, id, ended: false }
    }

    /// What a client that asked for `after` gets first: the logged events since, or `resync`.
    pub async fn catch_up(&self, after: Seq) -> Result<Vec<Outgoing>> {
        Ok(match self.app.events.catch_up(&self.tenant, &self.topics, after, self.seen).await? {
            CatchUp::Events(events) => events.iter().map(|e| Outgoing::event(e)).collect(),
            CatchUp::Resync => vec![Outgoing::resync(self.seen, "too far behind to catch up from the change log")],
        })
    }

    /// The next event for the connection; `None` once it must close. Cancel-safe.
    pub async fn next(&mut self) -> Option<Arc<Event>> {
        if self.ended {
            return None;
        }
        loop {
            match self.rx.recv().await {
                Ok(event) => {
                    let wanted = event.tenant == self.tenant
                        && self.topics.matches(&event)
                        && !(event.logged && event.pos <= self.seen)
                        && (event.origin == 0 || event.origin != self.id);
                    if wanted {
                        return Some(event);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => {
                    self.ended = true;
                    return None;
                }
            }
        }
    }

    pub fn position(&self) -> Seq {
        self.app.events.position()
    }
}

/// Sends one message within the send timeout; `false`: the connection is gone or too slow.
pub async fn send_ws<S>(sink: &mut S, message: Message, timeout: Duration) -> bool
where
    S: futures::Sink<Message> + Unpin,
{
    matches!(tokio::time::timeout(timeout, sink.send(message)).await, Ok(Ok(())))
}

/// Closes a connection that fell behind: `resync`, then close code 1008 (policy).
pub async fn close_lagging<S>(sink: &mut S, position: Seq, timeout: Duration)
where
    S: futures::Sink<Message> + Unpin,
{
    let resync = Outgoing::resync(position, "this connection fell behind; reconnect with ?after=").ws();
    if send_ws(sink, resync, timeout).await {
        let frame = CloseFrame { code: 1008, reason: Utf8Bytes::from_static("fell behind") };
        let _ = send_ws(sink, Message::Close(Some(frame)), timeout).await;
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// Comma-separated topics: `meetings`, `meeting:{id}`, `memories`, `memories:user:{id}`,
    /// `memories:agent:{id}`, `memories:run:{id}`, `documents`, `jobs`. Absent: every topic.
    #[param(example = "memories,documents")]
    pub topics: Option<String>,
    /// Catch up first on what the change log holds after this position (the `pos` of the last
    /// event seen); absent: only what happens from now on. Server-sent events also take
    /// `Last-Event-ID`.
    #[param(example = 0)]
    pub after: Option<u64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EventPage {
    /// `{type, pos, topics, op, id, data}` each, in change-log order.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<Value>,
    /// The position these events reach: ask again with `?after=` this.
    pub pos: Seq,
    /// Too far behind to catch up from the change log: reload through the REST API, then follow
    /// from `pos`.
    pub resync: bool,
}

/// Real-time events: WebSocket, server-sent events, or a JSON page.
///
/// One hub for the whole product, derived from the change log, so every write (REST, MCP, Mem0,
/// jobs, other cluster nodes) shows up. With `Upgrade: websocket` the connection receives each
/// event as a JSON text message; with `Accept: text/event-stream`, as server-sent events (name =
/// `type`, id = `pos`); otherwise the answer is one JSON page of the events after `after`. Each
/// event is `{type, pos, topics, op, id, data}`: `type` is `meeting`, `segment`, `insight`,
/// `summary`, `partial`, `memory`, `document` or `job`; `pos` is its change-log position.
/// Reconnect with `?after=<pos>` to catch up without gaps or duplicates; a client too far behind,
/// or one that stops reading for longer than the server's queue allows, is sent
/// `{"type": "resync", "pos": ...}` (and a slow one is disconnected). A connection sees only its
/// key's project. Browsers pass the key as the WebSocket subprotocol `nexus.key.<key>` beside
/// `nexus.v1`.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(EventParams),
    responses((status = 200, body = EventPage, description = "a JSON page; a WebSocket (101) or text/event-stream when asked"),
              (status = 400, body = super::error::ErrorBody)))]
pub async fn events(
    State(app): State<Arc<App>>,
    Caller(ctx): Caller,
    ApiQuery(params): ApiQuery<EventParams>,
    headers: HeaderMap,
    ws: std::result::Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response> {
    let topics = Topics::parse(params.topics.as_deref())?;
    let tenant = ctx.tenant.clone();
    if let Ok(ws) = ws {
        return Ok(upgrade(ws)
            .on_upgrade(move |socket| follow_ws(app, tenant, topics, params.after, socket))
            .into_response());
    }
    let wants_sse =
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/event-stream"));
    if wants_sse {
        let last_event_id =
            headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok());
        return Ok(follow_sse(app, tenant, topics, params.after.or(last_event_id)).await?.into_response());
    }
    let upto = app.events.position();
    let after = params.after.unwrap_or(upto);
    let page = match app.events.catch_up(&tenant, &topics, after, upto).await? {
        CatchUp::Events(events) => EventPage {
            events: events.iter().map(|e| serde_json::to_value(&**e).unwrap_or(Value::Null)).collect(),
            pos: upto,
            resync: false,
        },
        CatchUp::Resync => EventPage { events: Vec::new(), pos: upto, resync: true },
    };
    Ok(axum::Json(page).into_response())
}

async fn follow_ws(app: Arc<App>, tenant: TenantId, topics: Topics, after: Option<Seq>, socket: WebSocket) {
    let timeout = Duration::from_millis(app.events.config().send_timeout_ms);
    let (mut sink, mut inbound) = socket.split();
    let mut feed = Feed::open(&app, tenant, topics);
    if let Some(after) = after {
        let first = match feed.catch_up(after).await {
            Ok(first) => first,
            Err(e) => vec![Outgoing::error(&e, None)],
        };
        for message in first {
            if !send_ws(&mut sink, message.ws(), timeout).await {
                return;
            }
        }
    }
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
    loop {
        tokio::select! {
            event = feed.next() => match event {
                Some(event) => {
                    if !send_ws(&mut sink, Outgoing::event(&event).ws(), timeout).await {
                        return;
                    }
                }
                None => {
                    close_lagging(&mut sink, feed.position(), timeout).await;
                    return;
                }
            },
            message = inbound.next() => match message {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                // This stream only sends; what a client says is ignored (pongs, pings).
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => {
                if !send_ws(&mut sink, Message::Ping(bytes::Bytes::new()), timeout).await {
                    return;
                }
            }
        }
    }
}

async fn follow_sse(
    app: Arc<App>,
    tenant: TenantId,
    topics: Topics,
    after: Option<Seq>,
) -> Result<Sse<impl futures::Stream<Item = std::result::Result<SseEvent, std::convert::Infallible>>>> {
    let timeout = Duration::from_millis(app.events.config().send_timeout_ms);
    let mut feed = Feed::open(&app, tenant, topics);
    let first = match after {
        Some(after) => feed.catch_up(after).await?,
        None => Vec::new(),
    };
    // A small channel: the body takes from it as the client reads; a client that stops reading
    // stops the feed, which then lags and ends.
    let (tx, rx) = tokio::sync::mpsc::channel::<Outgoing>(16);
    tokio::spawn(async move {
        for message in first {
            if tx.send_timeout(message, timeout).await.is_err() {
                return;
            }
        }
        loop {
            tokio::select! {
                event = feed.next() => match event {
                    Some(event) => {
                        if tx.send_timeout(Outgoing::event(&event), timeout).await.is_err() {
                            return;
                        }
                    }
                    None => {
                        let resync = Outgoing::resync(feed.position(), "this connection fell behind; reconnect with ?after=");
                        let _ = tx.send_timeout(resync, timeout).await;
                        return;
                    }
                },
                _ = tx.closed() => return,
            }
        }
    });
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|message| (Ok(message.sse()), rx)) });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
