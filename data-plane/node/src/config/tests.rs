//! Unit tests of the node configuration: flags, environment and the TOML file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use clap::{CommandFactory, FromArgMatches};

use super::*;

const EXAMPLE: &str = include_str!("../../../../deploy/examples/strata-node.toml");

fn example_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("strata-node-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// What `main` does: parse, then the file under flags and environment.
fn load(args: &[&str]) -> anyhow::Result<NodeConfig> {
    let argv = std::iter::once("strata-node").chain(args.iter().copied());
    let matches = Cli::command().try_get_matches_from(argv)?;
    Cli::from_arg_matches(&matches)?.run.with_file(&matches)
}

#[test]
fn the_example_sets_every_setting() {
    let missing = strata_common::config::missing_from_example(
        &Cli::command(),
        EXAMPLE,
        &["config", "command"],
    )
    .unwrap();
    assert!(
        missing.is_empty(),
        "deploy/examples/strata-node.toml lacks {missing:?}"
    );
}

#[test]
fn the_example_file_loads() {
    let path = example_file("full.toml", EXAMPLE);
    let c = load(&["--config", path.to_str().unwrap()]).unwrap();
    assert_eq!((c.id.as_str(), c.region.as_str()), ("eu-1", "eu"));
    assert_eq!(c.public_url(), "https://eu-1.example.net");
    assert_eq!(c.announce_ips, ["203.0.113.10".parse::<IpAddr>().unwrap()]);
    assert_eq!(c.control_plane.len(), 2);
    assert_eq!(c.orphan_grace, Duration::from_secs(30));
    assert!(!c.insecure_relay);
    assert_eq!(c.auth, AuthMode::Required);
    assert_eq!(c.token_keys, Some(PathBuf::from("/etc/strata/token-keys")));
    assert_eq!(c.post_rate_per_ip, 10.0);
    assert_eq!(c.http_max_connections_per_ip, 256);
    assert_eq!(c.config, Some(path));
}

#[test]
fn booleans_from_the_file_load() {
    let path = example_file("bools.toml", "insecure_relay = true\nauth = \"open\"\n");
    let c = load(&["--config", path.to_str().unwrap()]).unwrap();
    assert!(c.insecure_relay);
    assert_eq!(c.auth, AuthMode::Open);
}

#[test]
fn flags_override_the_file() {
    let path = example_file("override.toml", EXAMPLE);
    let c = load(&[
        "--config",
        path.to_str().unwrap(),
        "--id",
        "us-7",
        "--announce-ips",
        "127.0.0.1,127.0.0.2",
        "--linger=1s",
        "--auth",
        "open",
        "--capacity",
        "3",
    ])
    .unwrap();
    assert_eq!(c.id, "us-7");
    assert_eq!(c.announce_ips.len(), 2);
    assert_eq!(c.linger, Duration::from_secs(1));
    assert_eq!(c.auth, AuthMode::Open);
    assert_eq!(c.capacity, 3);
    // What no flag named still comes from the file.
    assert_eq!(c.region, "eu");
    assert_eq!(c.max_publishers, 100);
    assert_eq!(c.relay_advertise.as_deref(), Some("eu-1.example.net:4433"));
}

#[test]
fn unknown_settings_are_refused() {
    let path = example_file("typo.toml", "capacty = 5\n");
    let e = load(&["--config", path.to_str().unwrap()])
        .unwrap_err()
        .to_string();
    assert!(e.contains("capacty"), "{e}");
}
