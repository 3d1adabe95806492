//! Runs every fuzz target's body over its seed corpus (`fuzz/corpus/<target>/`), so CI
//! exercises the targets without a fuzzer. The bodies are the fuzz crate's own source.

#[allow(dead_code, clippy::unwrap_used)]
#[path = "../../fuzz/src/bodies.rs"]
mod bodies;

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds in {}", dir.display());
    files
        .into_iter()
        .map(|p| {
            let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, data)
        })
        .collect()
}

fn run(target: &str, body: fn(&[u8])) {
    for (path, data) in corpus(target) {
        let r = std::panic::catch_unwind(|| body(&data));
        assert!(r.is_ok(), "{target} panicked on {}", path.display());
    }
}

#[test]
fn fuzz_corpus_sdp_offer() {
    run("sdp_offer", bodies::sdp_offer);
}

#[test]
fn fuzz_corpus_relay_framing() {
    run("relay_framing", bodies::relay_framing);
}

#[test]
fn fuzz_corpus_names() {
    run("names", bodies::names);
}

#[test]
fn fuzz_corpus_token() {
    run("token", bodies::token);
}
