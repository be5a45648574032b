//! Starting on cluster backends with bad settings: the real `nexus serve` on real servers
//! (tests/common/cluster.rs) stops at once with exit code 2 and one line naming the setting to
//! fix, never prints a secret, and writes nothing. Also checks the test servers themselves.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{self, S3Server};
use common::nexus;

const ACCESS_VAR: &str = "OBJECTS_TEST_ACCESS_KEY";
const SECRET_VAR: &str = "OBJECTS_TEST_SECRET_KEY";

/// `[store.objects]` on S3 with the credentials named by environment variables.
fn s3_config(dir: &Path, endpoint: &str, bucket: &str) -> PathBuf {
    let path = dir.join("nexus.toml");
    let text = format!(
        "[store.objects]\nbackend = \"s3\"\nendpoint = \"{endpoint}\"\nbucket = \"{bucket}\"\nallow_http = true\n\
         access_key_id_env = \"{ACCESS_VAR}\"\nsecret_access_key_env = \"{SECRET_VAR}\"\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `nexus serve` with `config` and the given credentials; it must exit within `limit`.
fn serve_expecting_exit(dir: &Path, config: &Path, access_key: &str, secret_key: &str, limit: Duration) -> Output {
    let mut cmd = nexus(&dir.join("data"));
    cmd.arg("--config")
        .arg(config)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env(ACCESS_VAR, access_key)
        .env(SECRET_VAR, secret_key)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn nexus serve");
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "nexus serve still ran after {limit:?}; stdout: {} stderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Exit code 2, and one error line on stderr that names `setting` and holds no secret.
fn assert_refused(out: &Output, setting: &str, secret: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "exit code; stderr: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "one error line: {stderr}");
    assert!(errors[0].contains(setting), "the error names {setting}: {stderr}");
    assert!(!stderr.contains(secret) && !stdout.contains(secret), "a secret was printed: {stderr}{stdout}");
    assert!(!stdout.contains("listening on"), "refused before listening: {stdout}");
}

/// The bucket holds nothing (or does not exist at all).
fn assert_untouched(server: &S3Server, bucket: &str, exists: bool) {
    if exists {
        assert_eq!(server.list_keys(bucket), Vec::<String>::new(), "nothing written to {bucket}");
    } else {
        let missing = std::panic::catch_unwind(|| server.list_keys(bucket));
        assert!(missing.is_err(), "bucket {bucket} was created");
    }
}

#[test]
fn s3_bucket_that_does_not_exist_stops_the_start() {
    let server = cluster::s3();
    let tmp = tempfile::tempdir().unwrap();
    let bucket = server.missing_bucket("absent");
    let config = s3_config(tmp.path(), &server.endpoint, &bucket);
    let out =
        serve_expecting_exit(tmp.path(), &config, &server.access_key, &server.secret_key, Duration::from_secs(20));
    assert_refused(&out, "store.objects.bucket", &server.secret_key);
    assert!(String::from_utf8_lossy(&out.stderr).contains(&bucket), "the error names the bucket");
    assert_untouched(server, &bucket, false);
}

#[test]
fn s3_wrong_credentials_stop_the_start() {
    let server = cluster::s3();
    let tmp = tempfile::tempdir().unwrap();
    let bucket = server.create_bucket("wrong-key");
    let config = s3_config(tmp.path(), &server.endpoint, &bucket);
    let wrong_secret = format!("{}-not-it", server.secret_key);
    let out = serve_expecting_exit(tmp.path(), &config, &server.access_key, &wrong_secret, Duration::from_secs(20));
    assert_refused(&out, "store.objects.access_key_id_env", &wrong_secret);
    assert!(!String::from_utf8_lossy(&out.stderr).contains(&server.secret_key));
    assert_untouched(server, &bucket, true);

    // An access key the server does not know at all.
    let out = serve_expecting_exit(tmp.path(), &config, "nobody-knows-me", &server.secret_key, Duration::from_secs(20));
    assert_refused(&out, "store.objects.access_key_id_env", &server.secret_key);
    assert_untouched(server, &bucket, true);
}

#[test]
fn s3_endpoint_nothing_listens_on_stops_the_start() {
    let server = cluster::s3();
    let tmp = tempfile::tempdir().unwrap();
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let config = s3_config(tmp.path(), &endpoint, "nexus");
    let started = Instant::now();
    let out =
        serve_expecting_exit(tmp.path(), &config, &server.access_key, &server.secret_key, Duration::from_secs(20));
    assert_refused(&out, "store.objects.endpoint", &server.secret_key);
    assert!(String::from_utf8_lossy(&out.stderr).contains(&endpoint), "the error names the endpoint");
    assert!(started.elapsed() < Duration::from_secs(10), "refused in {:?}", started.elapsed());
}

#[test]
fn s3_credentials_variable_unset_stops_the_start() {
    let server = cluster::s3();
    let tmp = tempfile::tempdir().unwrap();
    let bucket = server.create_bucket("unset-var");
    let config = s3_config(tmp.path(), &server.endpoint, &bucket);
    let mut cmd = nexus(&tmp.path().join("data"));
    cmd.arg("--config").arg(&config).args(["serve", "--listen", "127.0.0.1:0"]).env_remove(ACCESS_VAR);
    let out = common::run(cmd.env(SECRET_VAR, &server.secret_key));
    assert_refused(&out, "store.objects.access_key_id_env", &server.secret_key);
    assert!(String::from_utf8_lossy(&out.stderr).contains(ACCESS_VAR), "the error names the variable");
    assert_untouched(server, &bucket, true);
}

/// The test servers: every fresh database is a new, empty one; password authentication is on;
/// a role without superuser rights cannot create the `vector` extension.
#[test]
fn cluster_test_servers_give_fresh_databases_and_buckets() {
    let pg = cluster::postgres();
    let first = pg.fresh_database("smoke one");
    let second = pg.fresh_database("smoke two");
    assert_ne!(first, second);
    pg.psql(&first, "CREATE TABLE marker (id int); INSERT INTO marker VALUES (1)");
    assert_eq!(pg.psql(&first, "SELECT count(*) FROM marker"), "1");
    assert_eq!(
        pg.psql(&second, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"),
        "0",
        "a fresh database is empty"
    );
    assert!(pg.psql(&second, "SHOW server_version").starts_with("18"), "Postgres 18");
    assert!(pg.psql(&second, "SHOW max_connections").parse::<u32>().unwrap() >= 400);
    pg.psql(&second, "CREATE EXTENSION vector");
    assert_eq!(pg.psql(&second, "SELECT '[1,2]'::vector <-> '[1,3]'::vector"), "1");

    let wrong = pg.url_as(&pg.user, &format!("{}x", pg.password), "postgres");
    let refused = pg.try_psql(&wrong, "SELECT 1").unwrap_err();
    assert!(refused.contains("password authentication failed"), "{refused}");

    let role = pg.create_role("smoke");
    let owned = pg.fresh_database_owned_by("smoke owned", &role);
    pg.psql(&owned, "CREATE TABLE mine (id int)");
    let denied = pg.try_psql(&owned, "CREATE EXTENSION vector").unwrap_err();
    assert!(denied.contains("permission denied"), "{denied}");
    let as_role_elsewhere = pg.url_as(&role.name, &role.password, first.rsplit('/').next().unwrap());
    let denied = pg.try_psql(&as_role_elsewhere, "CREATE TABLE intruder (id int)").unwrap_err();
    assert!(denied.contains("permission denied"), "{denied}");

    let s3 = cluster::s3();
    let bucket = s3.create_bucket("smoke");
    assert_eq!(s3.list_keys(&bucket), Vec::<String>::new());
    assert_ne!(s3.create_bucket("smoke"), bucket);
    let missing = s3.missing_bucket("smoke");
    assert!(std::panic::catch_unwind(|| s3.list_keys(&missing)).is_err(), "a missing bucket lists as missing");
}

/// The access check behind the start and `nexus doctor`: each failure says which setting to fix.
#[tokio::test]
async fn s3_check_access_names_the_setting_to_fix() {
    use nexus::error::ErrorCode;
    use nexus::store::objects::s3::check_access;
    let server = cluster::s3();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("ak"), &server.access_key).unwrap();
    std::fs::write(tmp.path().join("sk"), &server.secret_key).unwrap();
    std::fs::write(tmp.path().join("wrong"), "not-the-secret-key").unwrap();
    let bucket = server.create_bucket("check");
    let config = |endpoint: &str, bucket: &str, secret: &str| nexus::config::ObjectsConfig {
        backend: nexus::config::ObjectsBackend::S3,
        endpoint: Some(endpoint.to_string()),
        bucket: Some(bucket.to_string()),
        region: cluster::S3_REGION.to_string(),
        path_style: true,
        access_key_id_env: None,
        secret_access_key_env: None,
        access_key_id_file: Some(tmp.path().join("ak")),
        secret_access_key_file: Some(tmp.path().join(secret)),
        allow_http: true,
        prefix: None,
    };

    let fine = check_access(&config(&server.endpoint, &bucket, "sk")).await.unwrap();
    assert!(fine.contains(&bucket) && fine.contains(&server.endpoint), "{fine}");

    let missing = server.missing_bucket("check");
    let err = check_access(&config(&server.endpoint, &missing, "sk")).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::ConfigInvalid, "{err}");
    assert!(err.message.contains("store.objects.bucket") && err.message.contains(&missing), "{err}");

    let err = check_access(&config(&server.endpoint, &bucket, "wrong")).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::ConfigInvalid, "{err}");
    assert!(err.message.contains("store.objects.secret_access_key_file"), "{err}");
    assert!(!err.message.contains("not-the-secret-key") && !err.message.contains(&server.secret_key), "{err}");

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let nowhere = format!("http://127.0.0.1:{port}");
    let err = check_access(&config(&nowhere, &bucket, "sk")).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::BackendUnavailable, "{err}");
    assert!(err.message.contains("store.objects.endpoint") && err.message.contains(&nowhere), "{err}");

    for err in [
        check_access(&config(&server.endpoint, &missing, "sk")).await.unwrap_err(),
        check_access(&config(&server.endpoint, &bucket, "wrong")).await.unwrap_err(),
        check_access(&config(&nowhere, &bucket, "sk")).await.unwrap_err(),
    ] {
        eprintln!("{err}");
        assert_eq!(err.message.lines().count(), 1, "one line: {err}");
    }
}

/// An https endpoint goes through rustls (on ring) and has its certificate verified: one that no
/// trusted authority signed is refused, naming the endpoint.
#[tokio::test]
async fn s3_https_endpoint_certificate_is_verified() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem(
        made.cert.pem().into_bytes(),
        made.signing_key.serialize_pem().into_bytes(),
    )
    .await
    .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let endpoint = format!("https://{}", listener.local_addr().unwrap());
    let server = axum_server::from_tcp_rustls(listener, tls).unwrap();
    tokio::spawn(server.serve(axum::Router::new().into_make_service()));

    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("ak"), "access").unwrap();
    std::fs::write(tmp.path().join("sk"), "secret-of-the-https-test").unwrap();
    let config = nexus::config::ObjectsConfig {
        backend: nexus::config::ObjectsBackend::S3,
        endpoint: Some(endpoint.clone()),
        bucket: Some("nexus".to_string()),
        region: cluster::S3_REGION.to_string(),
        path_style: true,
        access_key_id_env: None,
        secret_access_key_env: None,
        access_key_id_file: Some(tmp.path().join("ak")),
        secret_access_key_file: Some(tmp.path().join("sk")),
        allow_http: false,
        prefix: None,
    };
    let err = nexus::store::objects::s3::check_access(&config).await.unwrap_err();
    assert_eq!(err.code, nexus::error::ErrorCode::ConfigInvalid, "{err}");
    assert!(err.message.contains("store.objects.endpoint") && err.message.contains(&endpoint), "{err}");
    assert!(err.message.to_lowercase().contains("certificate"), "{err}");
    assert!(!err.message.contains("secret-of-the-https-test"), "{err}");
}

/// `[store.records]` on Postgres, with `records` (url, url_env or url_file lines) and `extra` sections.
fn pg_config(dir: &Path, records: &str, extra: &str) -> PathBuf {
    let path = dir.join("nexus-pg.toml");
    std::fs::write(&path, format!("[store.records]\nbackend = \"postgres\"\n{records}\n{extra}")).unwrap();
    path
}

/// Runs `nexus ARGS` with `config`; it must exit within 10 seconds.
fn nexus_with_config(dir: &Path, config: &Path, args: &[&str]) -> Output {
    let mut cmd = nexus(&dir.join("data"));
    cmd.arg("--config").arg(config).args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let limit = Duration::from_secs(10);
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn nexus");
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "nexus {args:?} still ran after {limit:?}; stdout: {} stderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// `nexus serve` with `config` stops with one line on stderr naming `setting` and none of `secrets`.
fn serve_refused(dir: &Path, config: &Path, setting: &str, secrets: &[&str]) -> String {
    let out = nexus_with_config(dir, config, &["serve", "--listen", "127.0.0.1:0"]);
    refused(&out, setting, secrets)
}

/// Exit code 2, exactly one line on stderr, naming `setting` and none of `secrets`; that line.
fn refused(out: &Output, setting: &str, secrets: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(2), "exit code; stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "exactly one line on stderr: {stderr}");
    assert!(lines[0].starts_with("nexus: error: "), "{stderr}");
    assert!(lines[0].contains(setting), "the error names {setting}: {stderr}");
    for secret in secrets {
        assert!(!stderr.contains(secret) && !stdout.contains(secret), "a secret was printed: {stderr}{stdout}");
    }
    assert!(!stdout.contains("listening on"), "refused before listening: {stdout}");
    eprintln!("{}", lines[0]);
    lines[0].to_string()
}

/// No table of Nexus's in the database at `url`.
fn assert_no_tables(url: &str) {
    let pg = cluster::postgres();
    assert_eq!(pg.psql(url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"), "0", "tables were created");
}

#[test]
fn postgres_malformed_url_stops_the_start() {
    let tmp = tempfile::tempdir().unwrap();
    for url in [
        "postgres://nexus:malformed-secret@/nexus",
        "postgres://nexus:malformed-secret@127.0.0.1:notaport/nexus",
        "postgres://nexus:malformed-secret@127.0.0.1/nexus?sslmode=sometimes",
        "nexus:malformed-secret at the database",
    ] {
        let config = pg_config(tmp.path(), &format!("url = \"{url}\""), "");
        let line = serve_refused(tmp.path(), &config, "store.records.url", &["malformed-secret"]);
        assert!(line.contains("postgres://"), "says what a URL looks like: {line}");
    }
}

#[test]
fn postgres_nothing_listening_stops_the_start() {
    let tmp = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = pg_config(tmp.path(), &format!("url = \"postgres://nexus:absent-secret@127.0.0.1:{port}/nexus\""), "");
    let started = Instant::now();
    let line = serve_refused(tmp.path(), &config, "store.records.url", &["absent-secret"]);
    assert!(started.elapsed() < Duration::from_secs(5), "refused in {:?}", started.elapsed());
    assert!(line.contains(&format!("127.0.0.1:{port}")), "names the server: {line}");
    assert!(line.contains("cannot reach"), "says the server is unreachable: {line}");
}

#[test]
fn postgres_wrong_password_stops_the_start() {
    let pg = cluster::postgres();
    let tmp = tempfile::tempdir().unwrap();
    let url = pg.fresh_database("wrong password");
    let database = url.rsplit('/').next().unwrap();
    let wrong = format!("{}-not-it", pg.password);
    let config = pg_config(tmp.path(), &format!("url = \"{}\"", pg.url_as(&pg.user, &wrong, database)), "");
    let line = serve_refused(tmp.path(), &config, "store.records.url", &[&wrong, &pg.password]);
    assert!(line.contains("password authentication failed"), "{line}");
    assert!(line.contains("check the user and password"), "says what to fix: {line}");
    assert_no_tables(&url);
}

#[test]
fn postgres_database_that_does_not_exist_stops_the_start_and_check() {
    let pg = cluster::postgres();
    let tmp = tempfile::tempdir().unwrap();
    let missing = format!("nx_missing_{}", std::process::id());
    let config = pg_config(tmp.path(), &format!("url = \"{}\"", pg.url(&missing)), "");
    let line = serve_refused(tmp.path(), &config, "store.records.url", &[&pg.password]);
    assert!(line.contains(&format!("database \"{missing}\" does not exist")), "{line}");
    let out = nexus_with_config(tmp.path(), &config, &["check"]);
    let line = refused(&out, "store.records.url", &[&pg.password]);
    assert!(line.contains(&missing), "{line}");
    let exists = format!("SELECT count(*) FROM pg_database WHERE datname = '{missing}'");
    assert_eq!(pg.psql(&pg.admin_url, &exists), "0", "the database was created");
}

#[test]
fn pgvector_without_the_right_to_create_the_extension_stops_the_start() {
    let pg = cluster::postgres();
    let tmp = tempfile::tempdir().unwrap();
    let role = pg.create_role("no vector");
    let url = pg.fresh_database_owned_by("no vector", &role);
    let config = pg_config(tmp.path(), &format!("url = \"{url}\""), "[store.vectors]\nbackend = \"pgvector\"\n");
    let line = serve_refused(tmp.path(), &config, "store.vectors", &[&role.password]);
    assert!(line.contains("CREATE EXTENSION vector"), "says what to run: {line}");
    assert_eq!(pg.psql(&url, "SELECT count(*) FROM pg_extension WHERE extname = 'vector'"), "0");
    assert_eq!(pg.psql(&url, "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'vector%'"), "0");
    assert_eq!(pg.psql(&url, "SELECT count(*) FROM records"), "0", "no record written");
}

#[test]
fn postgres_url_env_naming_an_unset_variable_stops_the_start() {
    let tmp = tempfile::tempdir().unwrap();
    let var = "NEXUS_TEST_RECORDS_URL_NEVER_SET";
    let config = pg_config(tmp.path(), &format!("url_env = \"{var}\""), "");
    let line = serve_refused(tmp.path(), &config, "store.records.url_env", &[]);
    assert!(line.contains(var), "names the variable: {line}");
}

#[test]
fn postgres_url_file_that_is_missing_stops_the_start() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("no-such-url-file");
    let config = pg_config(tmp.path(), &format!("url_file = \"{}\"", file.display()), "");
    let line = serve_refused(tmp.path(), &config, "store.records.url_file", &[]);
    assert!(line.contains(&file.display().to_string()), "names the file: {line}");
}

/// `nexus doctor` on a working cluster configuration: Postgres reachable and recent, pgvector
/// available, the clock close to the database's, the bucket readable; and a warning that nodes
/// without a shared master key would each generate their own.
#[test]
fn doctor_checks_the_cluster_backends() {
    let tmp = tempfile::tempdir().unwrap();
    let url = cluster::postgres().fresh_database("doctor");
    let s3 = cluster::s3();
    let bucket = s3.create_bucket("doctor");
    let objects = format!(
        "[store.objects]\nbackend = \"s3\"\nendpoint = \"{}\"\nbucket = \"{bucket}\"\nallow_http = true\n\
         access_key_id_env = \"{ACCESS_VAR}\"\nsecret_access_key_env = \"{SECRET_VAR}\"\n",
        s3.endpoint
    );
    let config = pg_config(
        tmp.path(),
        &format!("url = \"{url}\""),
        &format!("[store.vectors]\nbackend = \"pgvector\"\n{objects}"),
    );
    let mut cmd = nexus(&tmp.path().join("data"));
    cmd.arg("--config").arg(&config).arg("doctor");
    cmd.env(ACCESS_VAR, &s3.access_key).env(SECRET_VAR, &s3.secret_key);
    let out = common::run(&mut cmd);
    let text = String::from_utf8_lossy(&out.stdout);
    for expected in ["postgres 18", "pgvector", "database's clock", "auth.master_key"] {
        assert!(text.contains(expected), "doctor says nothing of {expected}: {text}");
    }
    assert!(text.contains(&bucket), "doctor names the bucket it read: {text}");
    assert_eq!(out.status.code(), Some(0), "warnings only: {text}");
    assert!(!text.contains(&cluster::postgres().password), "no password in the report");

    // The same with the bucket missing: a failure naming it, exit 1.
    let missing =
        pg_config(tmp.path(), &format!("url = \"{url}\""), &objects.replace(&bucket, &s3.missing_bucket("doctor")));
    let mut cmd = nexus(&tmp.path().join("data"));
    cmd.arg("--config").arg(&missing).arg("doctor").env(ACCESS_VAR, &s3.access_key).env(SECRET_VAR, &s3.secret_key);
    let out = common::run(&mut cmd);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
}
