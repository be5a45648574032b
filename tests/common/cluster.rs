//! Real cluster servers for tests: one Postgres 18 (with pgvector) and one S3-compatible server
//! (s3s-fs), both on loopback, shared by every test of a test process.
//!
//! Contract:
//! - With the `NEXUS_TEST_*` variables set (CI starts the servers once per run with
//!   `.ci/cluster-servers.sh start` and exports them), tests use those servers.
//! - Otherwise the first call starts one of each with the same script into a temporary
//!   directory; a watchdog stops them and removes the directory once this process is gone.
//! - When the software is missing, the first call panics saying to run
//!   `bash .ci/cluster-servers.sh install`.
//! - Tests never share state: each takes a fresh database ([`PgServer::fresh_database`]) or
//!   bucket ([`S3Server::create_bucket`]) under a unique name.
//!
//! Everything here is synchronous (psql and curl run as processes), so any test can call it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The Postgres server: superuser `user` with `password`, over TCP with password authentication.
#[derive(Clone, Debug)]
pub struct PgServer {
    /// The superuser's URL of the `postgres` database.
    pub admin_url: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    /// The directory holding psql, pg_ctl and the other client programs.
    pub bin: PathBuf,
}

/// A login role without superuser rights (cannot create databases, roles or untrusted
/// extensions such as `vector`).
#[derive(Clone, Debug)]
pub struct PgRole {
    pub name: String,
    pub password: String,
}

/// The S3-compatible server (path-style addressing, region `us-east-1`, plain http).
#[derive(Clone, Debug)]
pub struct S3Server {
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
}

pub const S3_REGION: &str = "us-east-1";

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/cluster-servers.sh");

/// The shared Postgres server.
pub fn postgres() -> &'static PgServer {
    static PG: OnceLock<PgServer> = OnceLock::new();
    PG.get_or_init(|| match (std::env::var("NEXUS_TEST_POSTGRES_URL"), std::env::var("NEXUS_TEST_PG_BIN")) {
        (Ok(url), Ok(bin)) => PgServer::from_url(&url, PathBuf::from(bin)),
        _ => started().pg.clone(),
    })
}

/// The shared S3 server.
pub fn s3() -> &'static S3Server {
    static S3: OnceLock<S3Server> = OnceLock::new();
    S3.get_or_init(|| {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        match (var("NEXUS_TEST_S3_ENDPOINT"), var("NEXUS_TEST_S3_ACCESS_KEY"), var("NEXUS_TEST_S3_SECRET_KEY")) {
            (Some(endpoint), Some(access_key), Some(secret_key)) => {
                S3Server { endpoint: endpoint.trim_end_matches('/').to_string(), access_key, secret_key }
            }
            _ => started().s3.clone(),
        }
    })
}

struct Started {
    pg: PgServer,
    s3: S3Server,
}

/// Servers this process started (once), stopped by the script's watchdog when it exits.
fn started() -> &'static Started {
    static STARTED: OnceLock<Started> = OnceLock::new();
    STARTED.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("nexus-cluster-{}-{}", std::process::id(), unique_suffix()));
        let output = Command::new("bash")
            .arg(SCRIPT)
            .arg("start")
            .arg(&dir)
            .arg("--watch")
            .arg(std::process::id().to_string())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {SCRIPT}: {e}"));
        if !output.status.success() {
            panic!(
                "the cluster test servers did not start ({}):\n{}\nif Postgres or s3s-fs is missing, run `bash .ci/cluster-servers.sh install`",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let exports = parse_exports(&String::from_utf8_lossy(&output.stdout));
        let get = |name: &str| {
            exports
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("{SCRIPT} start printed no {name}"))
        };
        Started {
            pg: PgServer::from_url(&get("NEXUS_TEST_POSTGRES_URL"), PathBuf::from(get("NEXUS_TEST_PG_BIN"))),
            s3: S3Server {
                endpoint: get("NEXUS_TEST_S3_ENDPOINT"),
                access_key: get("NEXUS_TEST_S3_ACCESS_KEY"),
                secret_key: get("NEXUS_TEST_S3_SECRET_KEY"),
            },
        }
    })
}

/// `export NAME='value'` lines, as the script prints them.
fn parse_exports(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("export "))
        .filter_map(|assignment| assignment.split_once('='))
        .map(|(name, value)| (name.to_string(), value.trim_matches('\'').to_string()))
        .collect()
}

/// A suffix that no other call, in this process or another, gives at the same time.
fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{}_{n}_{:x}", std::process::id(), nanos)
}

/// `hint` reduced to lowercase letters, digits and `sep`, at most `max` characters.
fn sanitize(hint: &str, sep: char, max: usize) -> String {
    let mut out: String =
        hint.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { sep }).collect();
    out.truncate(max);
    out
}

impl PgServer {
    fn from_url(url: &str, bin: PathBuf) -> PgServer {
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .unwrap_or_else(|| panic!("NEXUS_TEST_POSTGRES_URL is not a postgres:// URL"));
        let (userinfo, hostpart) = rest.rsplit_once('@').expect("NEXUS_TEST_POSTGRES_URL has no user:password@");
        let (user, password) = userinfo.split_once(':').expect("NEXUS_TEST_POSTGRES_URL has no password");
        let hostport = hostpart.split('/').next().unwrap_or_default();
        let (host, port) = hostport.rsplit_once(':').expect("NEXUS_TEST_POSTGRES_URL has no port");
        PgServer {
            admin_url: url.to_string(),
            host: host.to_string(),
            port: port.parse().expect("NEXUS_TEST_POSTGRES_URL has a bad port"),
            user: user.to_string(),
            password: password.to_string(),
            bin,
        }
    }

    /// The superuser's URL of `database`.
    pub fn url(&self, database: &str) -> String {
        self.url_as(&self.user, &self.password, database)
    }

    /// A URL of `database` as `user` with `password` (a wrong one, for a failing login).
    pub fn url_as(&self, user: &str, password: &str, database: &str) -> String {
        format!("postgres://{user}:{password}@{}:{}/{database}", self.host, self.port)
    }

    /// The path of one of the server's client programs (`psql`, `pg_dump`, ...).
    pub fn program(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    /// Runs `sql` with psql on `url`: its unaligned, tuples-only output, or psql's error.
    pub fn try_psql(&self, url: &str, sql: &str) -> Result<String, String> {
        let output = Command::new(self.program("psql"))
            .arg(url)
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.program("psql").display()));
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
        }
    }

    /// Like [`PgServer::try_psql`], panicking on an error.
    pub fn psql(&self, url: &str, sql: &str) -> String {
        self.try_psql(url, sql).unwrap_or_else(|e| panic!("psql failed on {sql:?}: {e}"))
    }

    /// A new, empty database named after `hint` (and unique); its superuser URL.
    pub fn fresh_database(&self, hint: &str) -> String {
        let name = self.create_database(hint, &self.user);
        self.url(&name)
    }

    /// A new, empty database owned by `role` (who may create tables in it, but not untrusted
    /// extensions such as `vector`); its URL as that role.
    pub fn fresh_database_owned_by(&self, hint: &str, role: &PgRole) -> String {
        let name = self.create_database(hint, &role.name);
        self.url_as(&role.name, &role.password, &name)
    }

    /// A new login role without superuser, createdb or createrole rights.
    pub fn create_role(&self, hint: &str) -> PgRole {
        let name = format!("nx_{}_{}", sanitize(hint, '_', 24), unique_suffix());
        let password = format!("pw{}", unique_suffix().replace('_', ""));
        self.psql(
            &self.admin_url,
            &format!("CREATE ROLE \"{name}\" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '{password}'"),
        );
        PgRole { name, password }
    }

    fn create_database(&self, hint: &str, owner: &str) -> String {
        let name = format!("nx_{}_{}", sanitize(hint, '_', 24), unique_suffix());
        assert!(name.len() <= 63, "database name {name} is too long");
        self.psql(&self.admin_url, &format!("CREATE DATABASE \"{name}\" OWNER \"{owner}\""));
        name
    }
}

impl S3Server {
    /// A new, empty bucket named after `hint` (and unique).
    pub fn create_bucket(&self, hint: &str) -> String {
        let name = self.missing_bucket(hint);
        let (status, body) = self.request("PUT", &format!("/{name}"));
        assert!(status == 200, "creating bucket {name} answered {status}: {body}");
        name
    }

    /// A unique bucket name that no bucket has.
    pub fn missing_bucket(&self, hint: &str) -> String {
        let name = format!("nx-{}-{}", sanitize(hint, '-', 20), unique_suffix().replace('_', "-"));
        name.chars().take(63).collect::<String>().trim_end_matches('-').to_string()
    }

    /// Keys of every object in `bucket` (at most 1000).
    pub fn list_keys(&self, bucket: &str) -> Vec<String> {
        let (status, body) = self.request("GET", &format!("/{bucket}?list-type=2"));
        assert!(status == 200, "listing bucket {bucket} answered {status}: {body}");
        body.split("<Key>")
            .skip(1)
            .filter_map(|part| part.split_once("</Key>"))
            .map(|(key, _)| key.to_string())
            .collect()
    }

    /// One signed request with an empty body: the status and the response body.
    fn request(&self, method: &str, path: &str) -> (u16, String) {
        const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let output = Command::new("curl")
            .args(["-sS", "-m", "30", "-X", method, "-w", "\n%{http_code}"])
            .arg("--aws-sigv4")
            .arg(format!("aws:amz:{S3_REGION}:s3"))
            .arg("--user")
            .arg(format!("{}:{}", self.access_key, self.secret_key))
            .arg("-H")
            .arg(format!("x-amz-content-sha256: {EMPTY_SHA256}"))
            .arg(format!("{}{path}", self.endpoint))
            .stdin(Stdio::null())
            .output()
            .expect("run curl");
        let text = String::from_utf8_lossy(&output.stdout).to_string();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
        (status.trim().parse().unwrap_or(0), body.to_string())
    }
}

/// An S3 server of one test's own (s3s-fs over `root`), for tests that stop it; killed on drop.
pub struct OwnS3 {
    pub server: S3Server,
    child: std::process::Child,
}

impl OwnS3 {
    pub fn start(root: &Path) -> OwnS3 {
        std::fs::create_dir_all(root).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let server = S3Server {
            endpoint: format!("http://127.0.0.1:{port}"),
            access_key: format!("own-{}", unique_suffix().replace('_', "-")),
            secret_key: format!("secret-{}", unique_suffix().replace('_', "-")),
        };
        let child = Command::new("s3s-fs")
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", &server.access_key, "--secret-key", &server.secret_key])
            .arg(root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run s3s-fs ({e}): run `bash .ci/cluster-servers.sh install`"));
        let own = OwnS3 { server, child };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "s3s-fs did not start on port {port}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        own
    }

    /// Stops the server now (its port then refuses connections).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OwnS3 {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Postgres server of one test's own, which the test may stop and start again on the same port
/// and data (the server [`postgres`] gives is shared and must stay up). Built from the same
/// binaries; run as `nobody` when this process is root. Stopped, and its directory removed, on
/// drop, or by a watchdog once this process is gone.
pub struct PrivatePg {
    pub server: PgServer,
    dir: PathBuf,
    /// `runuser -u nobody --` as root, nothing otherwise.
    as_pg: Vec<String>,
}

impl PrivatePg {
    /// Initialises a data directory and starts the server on a free port below 32768.
    pub fn start() -> PrivatePg {
        use std::os::unix::fs::PermissionsExt;
        let bin = postgres().bin.clone();
        let dir = std::env::temp_dir().join(format!("nexus-private-pg-{}", unique_suffix()));
        std::fs::create_dir_all(dir.join("pgdata")).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let password = format!("pw{}", unique_suffix().replace('_', ""));
        std::fs::write(dir.join("pgpass"), format!("{password}\n")).unwrap();
        let root = unsafe { libc::geteuid() } == 0;
        if root {
            for path in [dir.join("pgdata"), dir.join("pgpass")] {
                std::os::unix::fs::chown(&path, Some(nobody_uid()), None).unwrap();
            }
        }
        let as_pg = if root { ["runuser", "-u", "nobody", "--"].map(String::from).to_vec() } else { Vec::new() };
        let port = free_low_port();
        let server = PgServer {
            admin_url: format!("postgres://nexus:{password}@127.0.0.1:{port}/postgres"),
            host: "127.0.0.1".to_string(),
            port,
            user: "nexus".to_string(),
            password,
            bin,
        };
        let private = PrivatePg { server, dir, as_pg };
        private.watch();
        let pgdata = private.pgdata();
        run_checked(
            private
                .pg_command("initdb")
                .arg("-D")
                .arg(&pgdata)
                .args(["-U", "nexus"])
                .arg(format!("--pwfile={}", private.dir.join("pgpass").display()))
                .args(["--auth-local=scram-sha-256", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C"])
                .args(["--no-sync", "--no-instructions"]),
        );
        let _ = std::fs::remove_file(private.dir.join("pgpass"));
        let mut conf = std::fs::OpenOptions::new().append(true).open(pgdata.join("postgresql.conf")).unwrap();
        std::io::Write::write_all(
            &mut conf,
            format!(
                "\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = ''\n\
                 max_connections = 200\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            )
            .as_bytes(),
        )
        .unwrap();
        private.start_again();
        private
    }

    /// Stops the server (fast shutdown: open sessions are ended); its port then refuses connections.
    pub fn stop(&self) {
        run_checked(self.pg_command("pg_ctl").arg("-D").arg(self.pgdata()).args(["-m", "fast", "-w", "stop"]));
    }

    /// Starts the server again on the same port and data; returns once it answers.
    pub fn start_again(&self) {
        let log = self.pgdata().join("postgres.log");
        run_checked(
            self.pg_command("pg_ctl").arg("-D").arg(self.pgdata()).arg("-l").arg(log).args(["-w", "-t", "60", "start"]),
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while let Err(e) = self.server.try_psql(&self.server.admin_url, "SELECT 1") {
            assert!(std::time::Instant::now() < deadline, "the private postgres does not answer: {e}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    fn pgdata(&self) -> PathBuf {
        self.dir.join("pgdata")
    }

    /// One of the server's programs, run as the server's user.
    fn pg_command(&self, program: &str) -> Command {
        let path = self.server.program(program);
        let mut cmd = match self.as_pg.split_first() {
            Some((first, rest)) => {
                let mut cmd = Command::new(first);
                cmd.args(rest).arg(path);
                cmd
            }
            None => Command::new(path),
        };
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Stops the server and removes its directory once this process is gone, however it ends
    /// (by signal: the binaries may be gone by then).
    fn watch(&self) {
        let _ = Command::new("setsid")
            .args(["bash", "-c"])
            .arg(
                r#"while kill -0 "$1" 2>/dev/null && ! grep -q "^State:[[:space:]]*Z" "/proc/$1/status" 2>/dev/null; do
                       sleep 1
                   done
                   pid="$(head -n 1 "$2/pgdata/postmaster.pid" 2>/dev/null || true)"
                   if [ -n "$pid" ]; then
                       kill -QUIT "$pid" 2>/dev/null || true
                       for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
                       kill -KILL "$pid" 2>/dev/null || true
                   fi
                   rm -rf "$2""#,
            )
            .arg("watchdog")
            .arg(std::process::id().to_string())
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        if self.pgdata().join("postmaster.pid").exists() {
            let _ =
                self.pg_command("pg_ctl").arg("-D").arg(self.pgdata()).args(["-m", "immediate", "-w", "stop"]).output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `cmd`; panics with its output when it fails.
fn run_checked(cmd: &mut Command) {
    let output = cmd.output().unwrap_or_else(|e| panic!("cannot run {:?}: {e}", cmd.get_program()));
    assert!(
        output.status.success(),
        "{:?} failed ({}): {}{}",
        cmd.get_args().collect::<Vec<_>>(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The uid of `nobody`.
fn nobody_uid() -> u32 {
    let output = Command::new("id").args(["-u", "nobody"]).output().expect("run id");
    String::from_utf8_lossy(&output.stdout).trim().parse().expect("user nobody exists")
}

/// A port below 32768 (outside the range the kernel hands out to clients) that nothing listens
/// on now, so that it is still free when a stopped server starts again.
fn free_low_port() -> u16 {
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    (0..2000u32)
        .map(|i| 20_000 + ((seed / 7 + i * 7919 + std::process::id()) % 12_768) as u16)
        .find(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .expect("no free port below 32768")
}

/// A node named `name` with its own data directory under `root` (for node-local stores) over the
/// shared cluster configuration `config`, ready; with `master_key`, keys are on.
pub fn start_node(root: &Path, name: &str, config: &Path, master_key: Option<&str>) -> super::Server {
    let (config, master_key) = (config.to_path_buf(), master_key.map(str::to_string));
    let server = super::Server::start_with(&root.join(name), move |cmd| {
        cmd.arg("--config").arg(&config).env("NEXUS__CLUSTER__NODE_ID", name);
        if let Some(key) = master_key {
            cmd.env("NEXUS__AUTH__MASTER_KEY", key);
        }
    });
    server.wait_ready();
    server
}

/// A full set of cluster servers of one test's own (Postgres, S3, OpenSearch, Qdrant, a Bolt
/// graph), started with `.ci/cluster-servers.sh`, which the test may pause and resume (SIGSTOP /
/// SIGCONT: the server keeps its data and connections but answers nothing meanwhile). Stopped and
/// removed on drop, or by the script's watchdog once this process is gone.
///
/// FalkorDB (redis-server) does not survive SIGSTOP reliably: it crashed in about one run of
/// three once resumed. Its Bolt port is therefore reached through a [`FreezeProxy`], which
/// freezes the same way from the client's side (connections accepted, nothing answered).
pub struct PrivateStack {
    dir: PathBuf,
    /// The `NEXUS_TEST_*` variables the script printed.
    pub env: std::collections::HashMap<String, String>,
    bolt_proxy: FreezeProxy,
}

/// A TCP relay that can stop relaying: while frozen it accepts connections and holds them but
/// moves no byte either way, like a server that stopped running.
pub struct FreezeProxy {
    pub addr: std::net::SocketAddr,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FreezeProxy {
    pub fn start(upstream: std::net::SocketAddr) -> FreezeProxy {
        use std::sync::atomic::AtomicBool;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let frozen = std::sync::Arc::new(AtomicBool::new(false));
        let flag = frozen.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = std::net::TcpStream::connect(upstream) else { continue };
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (from, to, flag) = (from.try_clone().unwrap(), to.try_clone().unwrap(), flag.clone());
                    std::thread::spawn(move || relay(from, to, flag));
                }
            }
        });
        FreezeProxy { addr, frozen }
    }

    pub fn freeze(&self, on: bool) {
        self.frozen.store(on, std::sync::atomic::Ordering::SeqCst);
    }
}

fn relay(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering;
    from.set_read_timeout(Some(std::time::Duration::from_millis(20))).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if frozen.load(Ordering::SeqCst) {
            std::thread::sleep(std::time::Duration::from_millis(20));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

impl PrivateStack {
    pub fn start() -> PrivateStack {
        let dir = std::env::temp_dir().join(format!("nexus-private-stack-{}", unique_suffix()));
        let out = Command::new("bash")
            .arg(SCRIPT)
            .arg("start")
            .arg(&dir)
            .arg("--watch")
            .arg(std::process::id().to_string())
            .stderr(Stdio::inherit())
            .output()
            .expect("run .ci/cluster-servers.sh");
        assert!(out.status.success(), "cluster-servers.sh start failed (run `bash .ci/cluster-servers.sh install`)");
        let mut env: std::collections::HashMap<String, String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| line.strip_prefix("export "))
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
            .collect();
        let bolt = env.get("NEXUS_TEST_BOLT_URL").expect("cluster-servers.sh printed no NEXUS_TEST_BOLT_URL");
        let upstream = bolt.trim_start_matches("bolt://").parse().expect("a Bolt address");
        let bolt_proxy = FreezeProxy::start(upstream);
        env.insert("NEXUS_TEST_BOLT_URL".into(), format!("bolt://{}", bolt_proxy.addr));
        PrivateStack { dir, env, bolt_proxy }
    }

    pub fn var(&self, name: &str) -> &str {
        self.env.get(name).unwrap_or_else(|| panic!("cluster-servers.sh printed no {name}"))
    }

    /// A fresh database on this stack's Postgres.
    pub fn database(&self, hint: &str) -> String {
        let server =
            PgServer::from_url(self.var("NEXUS_TEST_POSTGRES_URL"), PathBuf::from(self.var("NEXUS_TEST_PG_BIN")));
        server.fresh_database(hint)
    }

    fn signal(&self, server: &str, signal: &str) {
        let pid = std::fs::read_to_string(self.dir.join(format!("{server}.pid")))
            .unwrap_or_else(|e| panic!("no pid file for {server}: {e}"));
        let status = Command::new("kill").arg(format!("-{signal}")).arg(pid.trim()).status().unwrap();
        assert!(status.success(), "kill -{signal} {server}");
    }

    /// The servers a stack can freeze, each with its own process and log.
    pub const FREEZABLE: [&'static str; 3] = ["osmem", "qdrant", "falkordb"];

    /// Freezes a server (one of [`Self::FREEZABLE`]): it answers nothing until resumed.
    pub fn pause(&self, server: &str) {
        if server == "falkordb" {
            return self.bolt_proxy.freeze(true);
        }
        self.signal(server, "STOP");
    }

    /// Resumes a paused server; panics with the end of its log if it did not survive the pause.
    pub fn resume(&self, server: &str) {
        if server == "falkordb" {
            return self.bolt_proxy.freeze(false);
        }
        self.signal(server, "CONT");
        std::thread::sleep(std::time::Duration::from_millis(200));
        if let Some(log) = self.exited(server) {
            panic!("{server} exited while it was paused; the end of its log:\n{log}");
        }
    }

    /// Kills the graph server's process (SIGKILL), as a crash would, and waits until its
    /// supervisor (`cluster-servers.sh supervise`) has started it again on the same port: empty,
    /// since it keeps nothing on disk.
    pub fn crash_graph_server(&self) {
        let log = self.dir.join("falkordb.log");
        let started = || std::fs::read_to_string(&log).unwrap_or_default().matches("Ready to accept").count();
        let before = started();
        let supervisor = std::fs::read_to_string(self.dir.join("falkordb.pid")).expect("falkordb's pid file");
        let supervisor = supervisor.trim();
        let children = std::fs::read_to_string(format!("/proc/{supervisor}/task/{supervisor}/children"))
            .unwrap_or_else(|e| panic!("falkordb's supervisor {supervisor} is gone: {e}"));
        let children: Vec<&str> = children.split_whitespace().collect();
        assert!(!children.is_empty(), "falkordb's supervisor runs no server");
        for child in &children {
            let status = Command::new("kill").arg("-KILL").arg(child).status().unwrap();
            assert!(status.success(), "kill -KILL falkordb ({child})");
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while started() == before {
            if let Some(log) = self.exited("falkordb") {
                panic!("falkordb's supervisor exited instead of starting it again; the end of its log:\n{log}");
            }
            assert!(std::time::Instant::now() < deadline, "falkordb was not started again in 30 s");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// The end of a server's log if its process has exited; None while it runs.
    pub fn exited(&self, server: &str) -> Option<String> {
        let pid = std::fs::read_to_string(self.dir.join(format!("{server}.pid"))).unwrap_or_default();
        let alive = Command::new("kill").arg("-0").arg(pid.trim()).status().is_ok_and(|s| s.success());
        if alive {
            return None;
        }
        let log = std::fs::read_to_string(self.dir.join(format!("{server}.log"))).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        Some(lines[lines.len().saturating_sub(40)..].join("\n"))
    }

    /// `[store.*]` for the full stack (records on `database_url`; names unique to `hint`), with
    /// the S3 credentials in files under `dir`.
    pub fn stores_toml(&self, dir: &Path, database_url: &str, hint: &str) -> String {
        let suffix = unique_suffix().replace('_', "-");
        let access = dir.join("s3-access-key");
        let secret = dir.join("s3-secret-key");
        std::fs::write(&access, format!("{}\n", self.var("NEXUS_TEST_S3_ACCESS_KEY"))).unwrap();
        std::fs::write(&secret, format!("{}\n", self.var("NEXUS_TEST_S3_SECRET_KEY"))).unwrap();
        let bucket = format!("{hint}-{suffix}").to_lowercase();
        std::fs::create_dir_all(self.dir.join("s3").join(&bucket)).unwrap();
        format!(
            "[store.records]\nbackend = \"postgres\"\nurl = \"{database_url}\"\npool_size = 8\nconnect_timeout_ms = 2000\n\
             [store.text]\nbackend = \"elasticsearch\"\nurl = \"{}\"\nindex_prefix = \"{hint}-{suffix}\"\ntimeout_ms = 2000\n\
             [store.vectors]\nbackend = \"qdrant\"\nurl = \"{}\"\napi_key = \"{}\"\ncollection_prefix = \"{hint}-{suffix}\"\ntimeout_ms = 2000\n\
             [store.graph]\nbackend = \"neo4j\"\nurl = \"{}\"\ntimeout_ms = 2000\n\
             [store.objects]\nbackend = \"s3\"\nendpoint = \"{}\"\nbucket = \"{bucket}\"\nallow_http = true\n\
             access_key_id_file = \"{}\"\nsecret_access_key_file = \"{}\"\n",
            self.var("NEXUS_TEST_OPENSEARCH_URL"),
            self.var("NEXUS_TEST_QDRANT_URL"),
            self.var("NEXUS_TEST_QDRANT_API_KEY"),
            self.var("NEXUS_TEST_BOLT_URL"),
            self.var("NEXUS_TEST_S3_ENDPOINT"),
            access.display(),
            secret.display(),
        )
    }
}

impl Drop for PrivateStack {
    fn drop(&mut self) {
        for server in Self::FREEZABLE {
            let _ = Command::new("bash")
                .arg("-c")
                .arg(format!("kill -CONT $(cat '{}/{server}.pid') 2>/dev/null", self.dir.display()))
                .status();
        }
        let _ = Command::new("bash").arg(SCRIPT).arg("stop").arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Which derived stores the nodes use.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Derived {
    /// Each node keeps its own (tantivy, usearch, sled).
    Local,
    /// Vectors shared on pgvector; text and graph per node.
    Pgvector,
    /// The full cluster stack: text on OpenSearch, vectors on Qdrant, graph over Bolt, objects on
    /// S3, all shared.
    Full,
}

/// A cluster configuration (records on `pg_url`), and what keeps its servers for the test.
pub struct ClusterConfig {
    pub path: PathBuf,
    _graph: Option<super::bolt::TestGraph>,
}

impl std::ops::Deref for ClusterConfig {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<std::ffi::OsStr> for ClusterConfig {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.path.as_os_str()
    }
}

pub fn secret_file(dir: &Path, name: &str, value: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{value}\n")).unwrap();
    path
}

pub fn cluster_config(dir: &Path, pg_url: &str, derived: Derived) -> ClusterConfig {
    let common = format!(
        "[store.records]\nbackend = \"postgres\"\nurl = \"{pg_url}\"\npool_size = 8\n\
         [cluster]\npoll_interval_ms = 200\nlease_ms = 3000\n\
         [indexer]\npersist_interval_ms = 100\n"
    );
    let (name, stores, graph) = match derived {
        Derived::Local => ("local", "[store.vectors]\nbackend = \"usearch\"\n".to_string(), None),
        Derived::Pgvector => ("pgvector", "[store.vectors]\nbackend = \"pgvector\"\n".to_string(), None),
        Derived::Full => {
            let graph = tokio::runtime::Runtime::new().unwrap().block_on(super::bolt::graph());
            let qdrant = super::qdrant::server();
            let s3 = s3();
            let login = match (&graph.server.username, &graph.server.password) {
                (Some(user), Some(password)) => format!("username = \"{user}\"\npassword = \"{password}\"\n"),
                _ => String::new(),
            };
            let stores = format!(
                "[store.text]\nbackend = \"elasticsearch\"\nurl = \"{}\"\nindex_prefix = \"{}\"\n\
                 [store.vectors]\nbackend = \"qdrant\"\nurl = \"{}\"\napi_key = \"{}\"\ncollection_prefix = \"{}\"\n\
                 [store.graph]\nbackend = \"neo4j\"\nurl = \"{}\"\n{login}\
                 [store.objects]\nbackend = \"s3\"\nendpoint = \"{}\"\nbucket = \"{}\"\nallow_http = true\n\
                 access_key_id_file = \"{}\"\nsecret_access_key_file = \"{}\"\n",
                super::opensearch::url(),
                super::opensearch::fresh_prefix("cluster"),
                qdrant.url,
                qdrant.api_key,
                super::qdrant::fresh_prefix("cluster"),
                graph.server.url,
                s3.endpoint,
                s3.create_bucket("cluster"),
                secret_file(dir, "s3-access-key", &s3.access_key).display(),
                secret_file(dir, "s3-secret-key", &s3.secret_key).display(),
            );
            ("full", stores, Some(graph))
        }
    };
    let path = dir.join(format!("nexus-{name}.toml"));
    std::fs::write(&path, format!("{common}{stores}")).unwrap();
    ClusterConfig { path, _graph: graph }
}
