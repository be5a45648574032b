//! Packaging: install.sh (layout, upgrade in place, rollback, uninstall) and the monitoring assets,
//! against the real binary. The checks that need system tools (shellcheck, systemd-analyze,
//! promtool, prometheus, cargo-deb, dpkg) are in `.ci/packaging`.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{Server, client, empty_config, nexus_at, nexus_bin, run};
use serde_json::{Value, json};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `sh install.sh ARGS` with a clean environment (no NEXUS_* but an empty config file).
fn install_sh(args: &[&str], destdir: Option<&Path>) -> Output {
    let mut cmd = Command::new("sh");
    cmd.arg(repo().join("install.sh")).args(args);
    for (key, _) in std::env::vars() {
        if key.starts_with("NEXUS") || key == "DESTDIR" {
            cmd.env_remove(key);
        }
    }
    cmd.env("NEXUS_CONFIG", empty_config()).env("RUST_LOG", "warn");
    if let Some(dir) = destdir {
        cmd.env("DESTDIR", dir);
    }
    let out = cmd.stdin(Stdio::null()).output().expect("run sh install.sh");
    eprintln!(
        "install.sh {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Every file and directory under `root`, with its permission bits, sorted.
fn tree(root: &Path) -> Vec<(String, u32)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, u32)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            out.push((rel, meta.permissions().mode() & 0o7777));
            if meta.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

fn mode_of(tree: &[(String, u32)], path: &str) -> u32 {
    tree.iter().find(|(p, _)| p == path).unwrap_or_else(|| panic!("{path} is missing from {tree:?}")).1
}

#[test]
fn install_sh_lays_out_the_service_under_destdir() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let out = install_sh(&["--service", "--binary", nexus_bin()], Some(&root));
    assert!(out.status.success());

    let files = tree(&root);
    let leaves: Vec<&str> = files
        .iter()
        .map(|(p, _)| p.as_str())
        .filter(|p| !files.iter().any(|(q, _)| q.starts_with(&format!("{p}/"))))
        .collect();
    assert_eq!(
        leaves,
        vec!["etc/nexus/nexus.toml", "etc/systemd/system/nexus.service", "usr/local/bin/nexus", "var/lib/nexus"],
        "exactly the binary, the unit, the configuration and the state directory"
    );
    assert_eq!(mode_of(&files, "usr/local/bin/nexus"), 0o755);
    assert_eq!(mode_of(&files, "etc/systemd/system/nexus.service"), 0o644);
    assert_eq!(mode_of(&files, "etc/nexus/nexus.toml"), 0o640);
    assert_eq!(mode_of(&files, "var/lib/nexus"), 0o750);
    assert_eq!(std::fs::read(root.join("usr/local/bin/nexus")).unwrap(), std::fs::read(nexus_bin()).unwrap());
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/nexus.service")).unwrap();
    assert!(unit.contains("\nExecStart=/usr/local/bin/nexus --config /etc/nexus/nexus.toml serve\n"), "{unit}");
    assert_eq!(
        std::fs::read_to_string(root.join("etc/nexus/nexus.toml")).unwrap(),
        std::fs::read_to_string(repo().join("packaging/nexus.toml")).unwrap()
    );

    // Again, with an edited configuration: idempotent, and the configuration is kept.
    std::fs::write(root.join("etc/nexus/nexus.toml"), "data_dir = \"/var/lib/nexus\"\n# edited\n").unwrap();
    let out = install_sh(&["--service", "--binary", nexus_bin()], Some(&root));
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("kept"));
    assert_eq!(tree(&root), files);
    assert!(std::fs::read_to_string(root.join("etc/nexus/nexus.toml")).unwrap().contains("# edited"));

    // --prefix reaches the unit.
    let other = tmp.path().join("other");
    assert!(
        install_sh(&["--service", "--prefix", "/opt/nexus", "--binary", nexus_bin()], Some(&other)).status.success()
    );
    let unit = std::fs::read_to_string(other.join("etc/systemd/system/nexus.service")).unwrap();
    assert!(unit.contains("\nExecStart=/opt/nexus/bin/nexus "), "{unit}");
    assert!(other.join("opt/nexus/bin/nexus").is_file());

    // --uninstall keeps data and configuration; --purge removes them.
    assert!(install_sh(&["--uninstall"], Some(&root)).status.success());
    assert!(!root.join("usr/local/bin/nexus").exists());
    assert!(!root.join("etc/systemd/system/nexus.service").exists());
    assert!(root.join("var/lib/nexus").is_dir() && root.join("etc/nexus/nexus.toml").is_file());
    assert!(install_sh(&["--uninstall", "--purge"], Some(&root)).status.success());
    assert!(!root.join("var/lib/nexus").exists() && !root.join("etc/nexus").exists());
}

#[test]
fn install_sh_dry_run_prints_every_step_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let out = install_sh(&["--service", "--binary", nexus_bin(), "--dry-run"], Some(&root));
    assert!(out.status.success());
    assert!(!root.exists(), "a dry run wrote {:?}", tree(&root));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for step in [
        "+ install -m 0755",
        "+ install -d -m 0750",
        "/var/lib/nexus",
        "+ install -m 0640",
        "/etc/nexus/nexus.toml",
        "+ install -m 0644",
        "/etc/systemd/system/nexus.service",
    ] {
        assert!(stdout.contains(step), "dry run lacks {step:?}:\n{stdout}");
    }

    // Without DESTDIR: the upgrade's steps, without touching anything.
    let prefix = tmp.path().join("prefix");
    let data = tmp.path().join("data");
    let prefix_arg = prefix.to_str().unwrap();
    let data_arg = data.to_str().unwrap();
    assert!(
        install_sh(&["--prefix", prefix_arg, "--binary", nexus_bin(), "--data-dir", data_arg], None).status.success()
    );
    let before = tree(tmp.path());
    let newer = newer_build(tmp.path());
    let out = install_sh(
        &["--prefix", prefix_arg, "--binary", newer.to_str().unwrap(), "--data-dir", data_arg, "--dry-run"],
        None,
    );
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    for step in ["+ cp -p", " backup --to ", "+ mv -f", "serve --listen 127.0.0.1:0"] {
        assert!(stdout.contains(step), "dry run lacks {step:?}:\n{stdout}");
    }
    let mut after = tree(tmp.path());
    after.retain(|(p, _)| p != "newer-nexus");
    assert_eq!(after, before);
}

/// The same program as a different file: what a newer build looks like to install.sh.
fn newer_build(dir: &Path) -> PathBuf {
    let path = dir.join("newer-nexus");
    let mut bytes = std::fs::read(nexus_bin()).unwrap();
    bytes.extend_from_slice(b"\0newer build\0");
    std::fs::write(&path, bytes).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A build that cannot run: the first bytes of the binary.
fn broken_build(dir: &Path) -> PathBuf {
    let path = dir.join("broken-nexus");
    let bytes = std::fs::read(nexus_bin()).unwrap();
    std::fs::write(&path, &bytes[..4096]).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn write_notes(server: &Server, n: usize) -> Vec<String> {
    let c = client();
    (0..n)
        .map(|i| {
            let r: Value = c
                .post(server.url("/api/v1/records?wait=true"))
                .json(
                    &json!({"kind": "note", "title": format!("note {i}"), "body": format!("kept across upgrades {i}")}),
                )
                .send()
                .unwrap()
                .json()
                .unwrap();
            r["written"][0]["id"].as_str().unwrap().to_string()
        })
        .collect()
}

fn assert_notes_served(bin: &Path, data: &Path, ids: &[String]) {
    let server = Server::start_command(nexus_at(bin, data), |_| {});
    server.wait_ready();
    let c = client();
    for (i, id) in ids.iter().enumerate() {
        let r = c.get(server.url(&format!("/api/v1/records/{id}"))).send().unwrap();
        assert_eq!(r.status(), 200, "record {id} after the upgrade");
        assert_eq!(r.json::<Value>().unwrap()["title"], format!("note {i}"));
    }
    let found: Value = c
        .post(server.url("/api/v1/records/search"))
        .json(&json!({"query": "upgrades"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(found["hits"].as_array().unwrap().len(), ids.len(), "{found}");
    assert!(server.stop().success());
}

fn backups(root: &Path) -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = std::fs::read_dir(root).unwrap().map(|e| e.unwrap().path()).collect();
    all.sort();
    all
}

#[test]
fn upgrade_in_place_keeps_data_and_a_broken_build_is_rolled_back() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("prefix");
    let data = tmp.path().join("data");
    let installed = prefix.join("bin/nexus");
    let (prefix_arg, data_arg) = (prefix.to_str().unwrap(), data.to_str().unwrap());
    let install = |binary: &Path, extra: &[&str]| {
        let mut args = vec!["--prefix", prefix_arg, "--data-dir", data_arg, "--binary", binary.to_str().unwrap()];
        args.extend_from_slice(extra);
        install_sh(&args, None)
    };

    // First install: the binary is checked on the (new) data directory.
    let first = install(Path::new(nexus_bin()), &[]);
    assert!(first.status.success());
    assert!(data.join("FORMAT").is_file(), "install.sh started the new binary on the data directory");
    let server = Server::start_command(nexus_at(&installed, &data), |_| {});
    server.wait_ready();
    let ids = write_notes(&server, 5);

    // An upgrade while that server holds the data directory is refused, and changes nothing.
    let newer = newer_build(tmp.path());
    let refused = install(&newer, &[]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("in use by a running nexus"));
    assert_eq!(std::fs::read(&installed).unwrap(), std::fs::read(nexus_bin()).unwrap());
    assert!(server.stop().success());

    // A newer build: backup, install, ready; the data is intact.
    let upgraded = install(&newer, &[]);
    assert!(upgraded.status.success());
    assert!(String::from_utf8_lossy(&upgraded.stdout).contains("upgrading"));
    assert_eq!(std::fs::read(&installed).unwrap(), std::fs::read(&newer).unwrap());
    let backup_root = tmp.path().join("data.backups");
    let first_backup = backups(&backup_root);
    assert_eq!(first_backup.len(), 1);
    assert_eq!(std::fs::read(first_backup[0].join("nexus")).unwrap(), std::fs::read(nexus_bin()).unwrap());
    // The installed nexus took a verified archive of the data directory.
    let archives: Vec<_> = std::fs::read_dir(&first_backup[0])
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".tar.zst"))
        .collect();
    assert_eq!(archives.len(), 1, "one archive in {}", first_backup[0].display());
    let verified = run(nexus_at(&installed, &tmp.path().join("unused")).args(["backup", "verify"]).arg(&archives[0]));
    assert!(verified.status.success(), "{}", String::from_utf8_lossy(&verified.stderr));
    assert_notes_served(&installed, &data, &ids);

    // Running it again with the same build changes nothing.
    let again = install(&newer, &[]);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("already this build"));
    assert_eq!(backups(&backup_root).len(), 1);

    // A broken build: rolled back to the previous binary, which still serves the data.
    let broken = broken_build(tmp.path());
    let failed = install(&broken, &["--ready-timeout", "30"]);
    assert_eq!(failed.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("rolled back") && stderr.contains("ready again"), "{stderr}");
    assert_eq!(std::fs::read(&installed).unwrap(), std::fs::read(&newer).unwrap(), "the previous binary is back");
    let all = backups(&backup_root);
    assert_eq!(all.len(), 2);
    assert!(all[1].join("data.failed").is_dir(), "the failed attempt's data directory is kept for a look");
    assert_notes_served(&installed, &data, &ids);
}

#[test]
fn install_sh_checks_a_plain_install_on_a_scratch_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("prefix");
    let prefix_arg = prefix.to_str().unwrap();
    let out = install_sh(&["--prefix", prefix_arg, "--binary", nexus_bin()], None);
    assert!(out.status.success());
    assert!(prefix.join("bin/nexus").is_file());

    // Nothing to roll back to: the failure says what to do.
    let broken = broken_build(tmp.path());
    let other = tmp.path().join("other");
    let out = install_sh(&["--prefix", other.to_str().unwrap(), "--binary", broken.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no previous nexus") && stderr.contains("nexus doctor"), "{stderr}");

    // Uninstall keeps a named data directory; --purge removes it and its backups.
    let data = tmp.path().join("data");
    let data_arg = data.to_str().unwrap();
    let prefix = tmp.path().join("prefix2");
    let prefix_arg = prefix.to_str().unwrap();
    assert!(
        install_sh(&["--prefix", prefix_arg, "--binary", nexus_bin(), "--data-dir", data_arg], None).status.success()
    );
    assert!(data.join("FORMAT").is_file());
    let out = install_sh(&["--uninstall", "--prefix", prefix_arg, "--data-dir", data_arg], None);
    assert!(out.status.success());
    assert!(!prefix.join("bin/nexus").exists() && data.join("FORMAT").is_file());
    assert!(String::from_utf8_lossy(&out.stdout).contains("kept"));
    let out = install_sh(&["--uninstall", "--purge", "--prefix", prefix_arg, "--data-dir", data_arg], None);
    assert!(out.status.success());
    assert!(!data.exists());

    let out = install_sh(&["--frobnicate"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown option --frobnicate"));
}

/// Metric names (`nexus_*`) in a text.
fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("nexus_") {
        let name: String =
            rest[at..].chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect();
        rest = &rest[at + name.len()..];
        names.push(name);
    }
    names.sort();
    names.dedup();
    names
}

#[test]
fn dashboard_and_alerts_use_only_metrics_that_nexus_exports() {
    let monitoring = repo().join("packaging/monitoring");
    let alerts = std::fs::read_to_string(monitoring.join("alerts.yml")).unwrap();
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(monitoring.join("grafana-dashboard.json")).unwrap()).unwrap();

    // The alerts the issue names, by what they watch.
    for (alert, watches) in [
        ("NexusDown", "up{job=\"nexus\"}"),
        ("NexusNotReady", "nexus_ready"),
        ("NexusIndexerLagging", "nexus_indexer_lag"),
        ("NexusHighErrorRate", "status=~\"5..\""),
        ("NexusSlowRequests", "histogram_quantile(0.95"),
        ("NexusDiskSpaceLow", "nexus_data_dir_free_bytes"),
    ] {
        let at = alerts.find(&format!("alert: {alert}\n")).unwrap_or_else(|| panic!("alerts.yml lacks {alert}"));
        let rule = alerts[at..].split("- alert:").next().unwrap();
        assert!(rule.contains(watches), "{alert} does not watch {watches}");
    }

    // Every panel is placed, queries Prometheus, and has a unique id.
    let panels = dashboard["panels"].as_array().unwrap();
    let mut ids: Vec<i64> = panels.iter().map(|p| p["id"].as_i64().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
    let mut exprs = String::new();
    for panel in panels.iter().filter(|p| p["type"] != "row") {
        assert!(panel["gridPos"]["w"].as_i64().unwrap() > 0, "{panel}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {} has no query", panel["title"]);
        for target in targets {
            exprs.push_str(target["expr"].as_str().unwrap());
            exprs.push('\n');
        }
    }

    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(&tmp.path().join("data"));
    server.wait_ready();
    write_notes(&server, 1);
    let metrics = client().get(server.url("/metrics")).send().unwrap().text().unwrap();
    let exported: Vec<&str> =
        metrics.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split(['{', ' ']).next()).collect();
    let named = [metric_names(&alerts), metric_names(&exprs)].concat();
    assert!(named.len() > 10, "{named:?}");
    for name in &named {
        assert!(
            exported.contains(&name.as_str()),
            "{name} is named by the monitoring assets but not exported:\n{metrics}"
        );
    }
    for disk in ["nexus_data_dir_free_bytes", "nexus_data_dir_total_bytes"] {
        let value: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{disk} ")))
            .unwrap_or_else(|| panic!("{disk} missing"))
            .trim()
            .parse()
            .unwrap();
        assert!(value > 0.0, "{disk} = {value}");
    }
    assert!(server.stop().success());
}
