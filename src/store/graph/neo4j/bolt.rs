//! A Bolt 5 client for the graph store: connections, authentication, auto-commit and explicit
//! transactions, and a small pool. Messages and PackStream values come from `boltr`; this module
//! adds the transport (TCP, or TLS on rustls with the ring provider), the request/response flow
//! and the pool.
//!
//! Contract:
//! - URLs: `bolt://`, `neo4j://` (plain) and `bolt+s://`, `neo4j+s://` (TLS, certificate checked
//!   against the system's roots plus `store.graph.ca_file`); port 7687 unless given. A `neo4j://`
//!   URL connects to the named server itself: Nexus fetches no routing table, so in a Neo4j
//!   cluster name a server that routes on the server side.
//! - The handshake offers Bolt 5.4 down to 5.1 in its first slot (HELLO then LOGON), which Neo4j
//!   5.5 and newer (5.26 LTS, 2025.x) accept.
//! - The LOGON map is written in the order `scheme`, `principal`, `credentials`: some servers
//!   (FalkorDB) read it positionally.
//! - A request runs `RUN` and `PULL` pipelined (one write) and returns every record. A connection
//!   that got a failure, an I/O error or no answer in time is closed, never reset and reused; the
//!   server rolls back what it had open.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use boltr::chunk::{ChunkReader, ChunkWriter};
use boltr::message::decode::decode_server_message;
use boltr::message::encode::encode_client_message;
use boltr::message::{ClientMessage, ServerMessage, sig};
use boltr::packstream::encode as ps;
use boltr::types::{BoltDict, BoltValue};
use bytes::{BufMut, BytesMut};
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, BufReader, BufWriter, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bolt 5.4 with a range of 3: 5.4, 5.3, 5.2 and 5.1, all in the first slot.
const PROPOSALS: [u8; 16] = [0, 3, 4, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

/// Connections one store keeps open at most.
pub const MAX_CONNECTIONS: usize = 16;

/// Where the server is, parsed from `store.graph.url`.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub tls: bool,
    /// `scheme://host:port`, for messages.
    pub display: String,
}

/// `scheme://host[:port][/]`, or why not.
pub fn parse_url(url: &str) -> Result<Endpoint, String> {
    let (scheme, rest) = url.split_once("://").ok_or("it has no scheme")?;
    let tls = match scheme.to_ascii_lowercase().as_str() {
        "bolt" | "neo4j" => false,
        "bolt+s" | "neo4j+s" => true,
        "bolt+ssc" | "neo4j+ssc" => {
            return Err(format!(
                "`{scheme}://` skips certificate checks; use `{}://` and name the server's CA in \
                 `store.graph.ca_file`",
                scheme.trim_end_matches("+ssc").to_string() + "+s"
            ));
        }
        other => return Err(format!("scheme `{other}` is not a Bolt scheme")),
    };
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err("credentials belong in `store.graph.username` and `store.graph.password_env`".into());
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']').ok_or("its IPv6 address has no closing `]`")?;
        (host.to_string(), after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host.to_string(), Some(port)),
            None => (authority.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err("it has no host".into());
    }
    let port = match port {
        Some(p) => p.parse::<u16>().map_err(|_| format!("port `{p}` is not a number from 1 to 65535"))?,
        None => 7687,
    };
    if port == 0 {
        return Err("port 0 is not a port".into());
    }
    let shown_host = if host.contains(':') { format!("[{host}]") } else { host.clone() };
    Ok(Endpoint { display: format!("{}://{shown_host}:{port}", scheme.to_ascii_lowercase()), host, port, tls })
}

/// How a connection logs on.
#[derive(Clone)]
pub enum Auth {
    None,
    Basic { user: String, password: String },
}

/// Why a request failed.
#[derive(Debug)]
pub enum Failure {
    /// The server could not be reached, the connection broke, or it did not answer in time.
    Unreachable(String),
    /// The server refused the login.
    Unauthorized(String),
    /// The server answered the request with a failure (the connection is still usable).
    Server { code: String, message: String },
    /// The server said something this client does not understand.
    Protocol(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Unreachable(m) | Failure::Unauthorized(m) | Failure::Protocol(m) => f.write_str(m),
            Failure::Server { code, message } if message.is_empty() => f.write_str(code),
            Failure::Server { code, message } => write!(f, "{code}: {message}"),
        }
    }
}

fn io_failure(e: std::io::Error) -> Failure {
    Failure::Unreachable(e.to_string())
}

fn bolt_failure(e: boltr::BoltError) -> Failure {
    match e {
        boltr::BoltError::Io(e) => io_failure(e),
        other => Failure::Protocol(other.to_string()),
    }
}

fn server_failure(metadata: &BoltDict) -> Failure {
    let text = |key: &str| metadata.get(key).and_then(BoltValue::as_str).unwrap_or_default().to_string();
    let code = match text("code") {
        c if c.is_empty() => text("neo4j_code"),
        c => c,
    };
    Failure::Server { code, message: text("message") }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One authenticated connection.
pub struct Connection {
    reader: ChunkReader<BufReader<ReadHalf<Box<dyn Stream>>>>,
    /// Buffered: pipelined messages leave in one write at the flush.
    writer: ChunkWriter<BufWriter<WriteHalf<Box<dyn Stream>>>>,
    /// Set while a message is on its way and when the connection can no longer be trusted (an I/O
    /// error, a request dropped half-way by a timeout, a protocol error).
    broken: bool,
}

impl Connection {
    async fn open(endpoint: &Endpoint, tls: Option<&Arc<rustls::ClientConfig>>, auth: &Auth) -> Result<Self, Failure> {
        let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port)).await.map_err(io_failure)?;
        let _ = tcp.set_nodelay(true);
        let mut stream: Box<dyn Stream> = match tls {
            None => Box::new(tcp),
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(endpoint.host.clone())
                    .map_err(|e| Failure::Protocol(format!("invalid server name {:?}: {e}", endpoint.host)))?;
                let connector = tokio_rustls::TlsConnector::from(config.clone());
                Box::new(connector.connect(name, tcp).await.map_err(io_failure)?)
            }
        };
        boltr::server::handshake::client_handshake(&mut stream, &PROPOSALS).await.map_err(|e| match e {
            boltr::BoltError::Io(e) => io_failure(e),
            other => Failure::Protocol(format!("the server does not speak Bolt 5.1-5.4: {other}")),
        })?;
        let (read, write) = tokio::io::split(stream);
        let mut connection = Connection {
            reader: ChunkReader::new(BufReader::new(read)),
            writer: ChunkWriter::new(BufWriter::new(write)),
            broken: false,
        };
        let agent = concat!("nexus/", env!("CARGO_PKG_VERSION"));
        let hello = ClientMessage::Hello {
            extra: HashMap::from([
                ("user_agent".to_string(), BoltValue::String(agent.into())),
                (
                    "bolt_agent".to_string(),
                    BoltValue::Dict(HashMap::from([("product".to_string(), BoltValue::String(agent.into()))])),
                ),
            ]),
        };
        connection.send(&hello).await?;
        connection.send_raw(&logon_message(auth)).await?;
        connection.flush().await?;
        if let ServerMessage::Failure { metadata } = connection.recv().await? {
            return Err(server_failure(&metadata));
        }
        match connection.recv().await? {
            ServerMessage::Success { .. } => Ok(connection),
            ServerMessage::Failure { metadata } => {
                let Failure::Server { code, message } = server_failure(&metadata) else { unreachable!() };
                Err(Failure::Unauthorized(if message.is_empty() { code } else { format!("{code}: {message}") }))
            }
            other => Err(Failure::Protocol(format!("unexpected answer to LOGON: {other}"))),
        }
    }

    async fn send(&mut self, message: &ClientMessage) -> Result<(), Failure> {
        let mut buf = BytesMut::new();
        encode_client_message(&mut buf, message);
        self.send_raw(&buf).await
    }

    async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        self.broken = true;
        self.writer.write_message(bytes).await.map_err(bolt_failure)?;
        self.broken = false;
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), Failure> {
        self.broken = true;
        self.writer.flush().await.map_err(bolt_failure)?;
        self.broken = false;
        Ok(())
    }

    async fn recv(&mut self) -> Result<ServerMessage, Failure> {
        self.broken = true;
        loop {
            let data = self.reader.read_message().await.map_err(bolt_failure)?;
            if data.is_empty() {
                continue; // a keep-alive
            }
            let message = decode_server_message(&data).map_err(bolt_failure)?;
            self.broken = false;
            return Ok(message);
        }
    }

    /// Runs `query` and returns its records; `extra` is RUN's extra map (empty in a transaction).
    pub async fn run(
        &mut self,
        query: &str,
        parameters: BoltDict,
        extra: BoltDict,
    ) -> Result<Vec<Vec<BoltValue>>, Failure> {
        self.send(&ClientMessage::Run { query: query.to_string(), parameters, extra }).await?;
        self.send(&ClientMessage::pull_all()).await?;
        self.flush().await?;
        match self.recv().await? {
            ServerMessage::Success { .. } => {}
            ServerMessage::Failure { metadata } => return Err(self.failed(&metadata).await),
            other => return Err(self.protocol(format!("unexpected answer to RUN: {other}"))),
        }
        let mut records = Vec::new();
        loop {
            match self.recv().await? {
                ServerMessage::Record { data } => records.push(data),
                ServerMessage::Success { .. } => return Ok(records),
                ServerMessage::Failure { metadata } => return Err(self.failed(&metadata).await),
                ServerMessage::Ignored => return Err(self.protocol("the server ignored PULL".into())),
            }
        }
    }

    /// Starts an explicit transaction.
    pub async fn begin(&mut self, extra: BoltDict) -> Result<(), Failure> {
        self.send(&ClientMessage::Begin { extra }).await?;
        self.flush().await?;
        self.expect_success("BEGIN").await
    }

    pub async fn commit(&mut self) -> Result<(), Failure> {
        self.send(&ClientMessage::Commit).await?;
        self.flush().await?;
        self.expect_success("COMMIT").await
    }

    /// The failure a request got. The connection is not used again: closing it ends whatever it
    /// was doing on the server (an open transaction is rolled back). FalkorDB 4.16 corrupts its
    /// read buffer over repeated failures and RESETs on one connection, so none is reset.
    async fn failed(&mut self, metadata: &BoltDict) -> Failure {
        self.broken = true;
        server_failure(metadata)
    }

    async fn expect_success(&mut self, what: &str) -> Result<(), Failure> {
        match self.recv().await? {
            ServerMessage::Success { .. } => Ok(()),
            ServerMessage::Failure { metadata } => Err(self.failed(&metadata).await),
            other => Err(self.protocol(format!("unexpected answer to {what}: {other}"))),
        }
    }

    fn protocol(&mut self, message: String) -> Failure {
        self.broken = true;
        Failure::Protocol(message)
    }
}

/// LOGON with its map in a fixed order.
fn logon_message(auth: &Auth) -> BytesMut {
    let mut buf = BytesMut::new();
    ps::encode_struct_header(&mut buf, sig::LOGON, 1);
    match auth {
        Auth::None => {
            buf.put_u8(0xA1); // a map of one entry
            ps::encode_string(&mut buf, "scheme");
            ps::encode_string(&mut buf, "none");
        }
        Auth::Basic { user, password } => {
            buf.put_u8(0xA3); // a map of three entries
            for (key, value) in [("scheme", "basic"), ("principal", user.as_str()), ("credentials", password.as_str())]
            {
                ps::encode_string(&mut buf, key);
                ps::encode_string(&mut buf, value);
            }
        }
    }
    buf
}

/// Opens connections on demand and keeps idle ones for reuse.
pub struct Pool {
    endpoint: Endpoint,
    tls: Option<Arc<rustls::ClientConfig>>,
    auth: Auth,
    timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl Pool {
    pub fn new(endpoint: Endpoint, tls: Option<Arc<rustls::ClientConfig>>, auth: Auth, timeout: Duration) -> Pool {
        Pool {
            endpoint,
            tls,
            auth,
            timeout,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// A connection for one unit of work: an idle one, or a new one.
    pub async fn session(&self) -> Result<Session<'_>, Failure> {
        let permit = tokio::time::timeout(self.timeout, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| Failure::Unreachable("every connection stayed busy".into()))?
            .map_err(|_| Failure::Unreachable("the connection pool is closed".into()))?;
        let reused = self.idle.lock().pop();
        let (connection, reused) = match reused {
            Some(c) => (c, true),
            None => (self.connect().await?, false),
        };
        Ok(Session { pool: self, connection: Some(connection), reused, in_transaction: false, _permit: permit })
    }

    async fn connect(&self) -> Result<Connection, Failure> {
        tokio::time::timeout(self.timeout, Connection::open(&self.endpoint, self.tls.as_ref(), &self.auth))
            .await
            .map_err(|_| Failure::Unreachable(format!("no answer within {} ms", self.timeout.as_millis())))?
    }
}

/// A pooled connection; it goes back to the pool when dropped, unless it broke.
pub struct Session<'a> {
    pool: &'a Pool,
    connection: Option<Connection>,
    /// Taken from the idle list: the server may have closed it meanwhile.
    reused: bool,
    /// Between a BEGIN and its COMMIT.
    in_transaction: bool,
    _permit: OwnedSemaphorePermit,
}

impl Session<'_> {
    /// Runs one query. Outside a transaction, a broken connection is replaced first, and a reused
    /// one the server closed while idle is replaced once.
    pub async fn run(
        &mut self,
        query: &str,
        parameters: BoltDict,
        extra: BoltDict,
    ) -> Result<Vec<Vec<BoltValue>>, Failure> {
        self.usable().await?;
        let timeout = self.pool.timeout;
        let c = self.connection.as_mut().ok_or_else(lost)?;
        let first = within(timeout, c, |c| c.run(query, parameters.clone(), extra.clone())).await;
        match first {
            Err(Failure::Unreachable(_)) if self.reused && !self.in_transaction => {
                self.replace().await?;
                let c = self.connection.as_mut().ok_or_else(lost)?;
                within(timeout, c, |c| c.run(query, parameters, extra)).await
            }
            other => {
                self.reused = false;
                other
            }
        }
    }

    /// Starts an explicit transaction (same replacement rules as [`Session::run`]).
    pub async fn begin(&mut self, extra: BoltDict) -> Result<(), Failure> {
        self.usable().await?;
        let timeout = self.pool.timeout;
        let c = self.connection.as_mut().ok_or_else(lost)?;
        let first = within(timeout, c, |c| c.begin(extra.clone())).await;
        let result = match first {
            Err(Failure::Unreachable(_)) if self.reused => {
                self.replace().await?;
                let c = self.connection.as_mut().ok_or_else(lost)?;
                within(timeout, c, |c| c.begin(extra)).await
            }
            other => other,
        };
        self.reused = false;
        self.in_transaction = result.is_ok();
        result
    }

    pub async fn commit(&mut self) -> Result<(), Failure> {
        let timeout = self.pool.timeout;
        self.in_transaction = false;
        let c = self.connection.as_mut().ok_or_else(lost)?;
        within(timeout, c, |c| c.commit()).await
    }

    /// Gives up the connection: the server rolls back an open transaction when it closes.
    pub fn discard(&mut self) {
        self.in_transaction = false;
        self.connection = None;
    }

    /// A connection that can take a request: a broken one is replaced, except inside a
    /// transaction (which it ended).
    async fn usable(&mut self) -> Result<(), Failure> {
        let healthy = self.connection.as_ref().is_some_and(|c| !c.broken);
        if healthy {
            return Ok(());
        }
        if self.in_transaction {
            return Err(lost());
        }
        self.replace().await
    }

    async fn replace(&mut self) -> Result<(), Failure> {
        self.connection = None;
        self.reused = false;
        self.connection = Some(self.pool.connect().await?);
        Ok(())
    }
}

fn lost() -> Failure {
    Failure::Unreachable("the connection was lost".into())
}

/// Runs `f` on `connection` within `timeout`. A timeout drops the request while it waits on the
/// socket, which leaves the connection marked broken (see [`Connection::recv`]).
async fn within<'c, T, F>(
    timeout: Duration,
    connection: &'c mut Connection,
    f: impl FnOnce(&'c mut Connection) -> F,
) -> Result<T, Failure>
where
    F: Future<Output = Result<T, Failure>> + 'c,
{
    tokio::time::timeout(timeout, f(connection))
        .await
        .unwrap_or_else(|_| Err(Failure::Unreachable(format!("no answer within {} ms", timeout.as_millis()))))
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take()
            && !connection.broken
            && !self.in_transaction
        {
            self.pool.idle.lock().push(connection);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let e = parse_url("bolt://graph.internal:7688").unwrap();
        assert_eq!((e.host.as_str(), e.port, e.tls), ("graph.internal", 7688, false));
        assert_eq!(e.display, "bolt://graph.internal:7688");
        let e = parse_url("neo4j+s://db.example.com").unwrap();
        assert_eq!((e.host.as_str(), e.port, e.tls), ("db.example.com", 7687, true));
        let e = parse_url("bolt://[::1]:7000/").unwrap();
        assert_eq!((e.host.as_str(), e.port, e.display.as_str()), ("::1", 7000, "bolt://[::1]:7000"));
        assert!(parse_url("http://x:7474").unwrap_err().contains("not a Bolt scheme"));
        assert!(parse_url("bolt+ssc://x").unwrap_err().contains("bolt+s://"));
        assert!(parse_url("bolt://user:pw@x").unwrap_err().contains("store.graph.username"));
        assert!(parse_url("bolt://x:99999").is_err());
        assert!(parse_url("x:7687").is_err());
    }

    #[test]
    fn logon_keeps_its_order() {
        let bytes = logon_message(&Auth::Basic { user: "u".into(), password: "p".into() });
        let expected: &[u8] = &[
            0xB1, 0x6A, 0xA3, 0x86, b's', b'c', b'h', b'e', b'm', b'e', 0x85, b'b', b'a', b's', b'i', b'c', 0x89, b'p',
            b'r', b'i', b'n', b'c', b'i', b'p', b'a', b'l', 0x81, b'u', 0x8B, b'c', b'r', b'e', b'd', b'e', b'n', b't',
            b'i', b'a', b'l', b's', 0x81, b'p',
        ];
        assert_eq!(&bytes[..], expected);
    }
}
