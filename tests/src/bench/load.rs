//! A closed-loop load generator: N callers, each with one call in flight at a time, for a fixed
//! time; every call's latency is recorded.
//!
//! Closed loop means the offered load adapts to the server: a caller issues its next call as soon
//! as the previous one answers. Throughput is then "how many calls N callers get through", and
//! latency includes any queueing those N callers cause.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::stats::Sample;

/// Calls per caller and phase at most, so that memory stays bounded whatever the call costs.
const MAX_CALLS_PER_CALLER: usize = 20_000_000;

/// One caller: issues one call of the benchmarked kind.
pub trait Caller: Send + 'static {
    /// One call; an error counts against the measurement but does not stop it.
    fn call(&mut self) -> impl Future<Output = Result<()>> + Send;
}

/// What one caller saw in one phase.
struct CallerStats {
    latencies_ns: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
    finished: Instant,
}

/// Runs `callers` concurrently for `duration` and returns what they saw, and the callers for
/// reuse (a warm-up is a first run whose sample is dropped).
pub async fn run<C: Caller>(callers: Vec<C>, duration: Duration) -> Result<(Sample, Vec<C>)> {
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = callers
        .into_iter()
        .map(|mut caller| {
            tokio::spawn(async move {
                let mut stats = CallerStats {
                    latencies_ns: Vec::with_capacity(4096),
                    errors: 0,
                    first_error: None,
                    finished: start,
                };
                while Instant::now() < deadline && stats.latencies_ns.len() < MAX_CALLS_PER_CALLER {
                    let t0 = Instant::now();
                    let result = caller.call().await;
                    let ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
                    match result {
                        Ok(()) => stats.latencies_ns.push(ns),
                        Err(e) => {
                            stats.errors += 1;
                            stats.first_error.get_or_insert_with(|| format!("{e:#}"));
                        }
                    }
                }
                stats.finished = Instant::now();
                (caller, stats)
            })
        })
        .collect();
    let mut callers = Vec::with_capacity(tasks.len());
    let mut latencies = Vec::new();
    let (mut errors, mut first_error, mut end) = (0, None, start);
    for task in tasks {
        let (caller, stats) = task.await.context("a benchmark caller panicked")?;
        callers.push(caller);
        latencies.extend(stats.latencies_ns);
        errors += stats.errors;
        first_error = first_error.or(stats.first_error);
        end = end.max(stats.finished);
    }
    let sample = Sample::new(latencies, errors, first_error, end - start, callers.len());
    Ok((sample, callers))
}
