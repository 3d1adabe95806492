//! Configuration in layers: a TOML file, under `STRATA_*` environment
//! variables, under flags.
//!
//! Each binary declares one struct that derives both clap (flags, environment
//! variables, defaults) and serde (`deny_unknown_fields`, the file). Clap
//! parses the command line as usual; [`layered`] then puts the file's values
//! under it: a setting comes from the file only where clap took its default,
//! never where it came from a flag or the environment. The merge happens on
//! typed values, not by turning the file back into command-line arguments, so
//! booleans, lists and durations need no special cases.

use std::path::{Path, PathBuf};

use clap::ArgMatches;
use clap::parser::ValueSource;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The control plane's gRPC address that nodes and the operator CLI dial when
/// `--control-plane` is not given: the control plane's default `--listen`
/// address on this machine.
pub const DEFAULT_CONTROL_PLANE: &str = "http://127.0.0.1:7400";

/// Why a configuration file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not TOML, or holds an unknown setting or a bad value.
    #[error("{path}: {source}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The parser's message (names the key and the line).
        source: toml::de::Error,
    },
    /// The settings given on the command line could not be turned into TOML
    /// values (a setting whose type has no TOML form).
    #[error("configuration cannot be merged with a file: {0}")]
    Serialize(#[from] toml::ser::Error),
}

/// Whether the argument `id` was given on the command line or in the environment.
fn explicit(matches: &ArgMatches, id: &str) -> bool {
    matches.ids().any(|i| i.as_str() == id)
        && matches!(
            matches.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
}

/// `from_cli` (what clap parsed into `matches`) over the TOML file at `path`.
///
/// Every setting is a field named like its clap argument id (the derive's
/// default). Fields serde skips (the config path itself, subcommands,
/// secrets taken from the environment) come back at their `Default`: the
/// caller copies them over from `from_cli`.
pub fn layered<T>(matches: &ArgMatches, from_cli: &T, path: &Path) -> Result<T, ConfigError>
where
    T: Serialize + DeserializeOwned,
{
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let invalid = |source| ConfigError::Invalid {
        path: path.to_owned(),
        source,
    };
    let mut merged: toml::Table = toml::from_str(&text).map_err(invalid)?;
    let toml::Value::Table(cli) = toml::Value::try_from(from_cli)? else {
        // A struct always serializes to a table; anything else has nothing to merge.
        return T::deserialize(toml::Value::Table(merged)).map_err(invalid);
    };
    for (key, value) in cli {
        if explicit(matches, &key) || !merged.contains_key(&key) {
            merged.insert(key, value);
        }
    }
    T::deserialize(toml::Value::Table(merged)).map_err(invalid)
}

/// Parses "250ms", "3s", "1m", "1h" or a plain number of seconds (at most a day).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration unit in {s:?}; use ms, s, m or h")),
    };
    if !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("duration {s:?} out of range"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// Durations in TOML as strings like "3s" (`#[serde(with = "strata_common::config::duration")]`).
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// As milliseconds, "1500ms", which [`super::parse_duration`] reads back exactly.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }

    /// Any form [`super::parse_duration`] reads.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}

/// The example files of a binary must set every setting, so that they stay a
/// complete reference: the argument ids of `command` (less `skip`) missing
/// from the TOML text `example`.
pub fn missing_from_example(
    command: &clap::Command,
    example: &str,
    skip: &[&str],
) -> Result<Vec<String>, toml::de::Error> {
    let table: toml::Table = toml::from_str(example)?;
    Ok(command
        .get_arguments()
        .map(|a| a.get_id().as_str())
        .filter(|id| !skip.contains(id) && !matches!(*id, "help" | "version"))
        .filter(|id| !table.contains_key(*id))
        .map(str::to_owned)
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use clap::{CommandFactory, FromArgMatches, Parser};
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Parser, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Demo {
        #[arg(long)]
        #[serde(skip)]
        config: Option<PathBuf>,
        #[arg(long, default_value = "a")]
        name: String,
        #[arg(long)]
        flag: bool,
        #[arg(long, value_delimiter = ',', default_value = "x")]
        list: Vec<String>,
        #[arg(long, default_value = "1s", value_parser = parse_duration)]
        #[serde(with = "duration")]
        wait: Duration,
        #[arg(long)]
        maybe: Option<u32>,
    }

    impl Default for Demo {
        fn default() -> Self {
            Demo::parse_from(["demo"])
        }
    }

    fn load(file: &str, args: &[&str]) -> Result<Demo, ConfigError> {
        let dir = std::env::temp_dir().join(format!(
            "strata-common-config-{}-{}",
            std::process::id(),
            file.len() + args.len() * 1000
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("demo.toml");
        std::fs::write(&path, file).unwrap();
        let argv = std::iter::once("demo").chain(args.iter().copied());
        let m = Demo::command().try_get_matches_from(argv).unwrap();
        let cli = Demo::from_arg_matches(&m).unwrap();
        let r = layered(&m, &cli, &path);
        let _ = std::fs::remove_dir_all(&dir);
        r
    }

    const FILE: &str =
        "name = \"b\"\nflag = true\nlist = [\"p\", \"q\"]\nwait = \"250ms\"\nmaybe = 7\n";

    #[test]
    fn the_file_fills_what_flags_leave_at_default() {
        let d = load(FILE, &[]).unwrap();
        assert_eq!(d.name, "b");
        assert!(d.flag);
        assert_eq!(d.list, ["p", "q"]);
        assert_eq!(d.wait, Duration::from_millis(250));
        assert_eq!(d.maybe, Some(7));
    }

    #[test]
    fn flags_win_over_the_file() {
        let d = load(
            FILE,
            &["--name", "c", "--list", "r", "--wait", "2s", "--maybe", "9"],
        )
        .unwrap();
        assert_eq!(d.name, "c");
        assert_eq!(d.list, ["r"]);
        assert_eq!(d.wait, Duration::from_secs(2));
        assert_eq!(d.maybe, Some(9));
        assert!(d.flag);
    }

    #[test]
    fn flags_fill_what_the_file_leaves_out() {
        let d = load("name = \"b\"\n", &["--flag"]).unwrap();
        assert_eq!((d.name.as_str(), d.flag), ("b", true));
        assert_eq!(d.list, ["x"]);
        assert_eq!(d.maybe, None);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let e = load("nmae = \"b\"\n", &[]).unwrap_err().to_string();
        assert!(e.contains("nmae"), "{e}");
        let e = load("wait = \"soon\"\n", &[]).unwrap_err().to_string();
        assert!(e.contains("soon"), "{e}");
        let e = load("flag = \"yes\"\n", &[]).unwrap_err().to_string();
        assert!(e.contains("flag"), "{e}");
    }

    #[test]
    fn an_example_must_name_every_setting() {
        let missing = missing_from_example(&Demo::command(), FILE, &["config"]).unwrap();
        assert!(missing.is_empty(), "{missing:?}");
        let missing =
            missing_from_example(&Demo::command(), "name = \"b\"\n", &["config"]).unwrap();
        assert_eq!(missing, ["flag", "list", "wait", "maybe"]);
    }
}
