//! Claims refused for lack of budget: a control-plane replica answers RESOURCE_EXHAUSTED
//! with a `grpc-retry-pushback-ms` hint when too many stream starts are in flight
//! (`control-plane/src/service/admission.rs`). The node waits the longer of the hint and its
//! backoff, then asks again, for at most [`PUSHBACK_BUDGET`] in all; past that the refusal
//! is the answer.

use std::future::Future;
use std::time::Duration;

use strata_common::backoff::Backoff;
use strata_proto::pushback;
use tokio::time::Instant;

use super::ControlError;

/// How long one call may spend waiting on refusals before it fails with the last one.
pub const PUSHBACK_BUDGET: Duration = Duration::from_secs(6);
/// The backoff under the hints: the first retry waits at least this long.
const FIRST: Duration = Duration::from_millis(50);
/// ... and no retry waits longer than this unless a hint says so.
const MAX: Duration = Duration::from_secs(1);

/// Runs `attempt` again while it is refused RESOURCE_EXHAUSTED, as the hint and the
/// backoff say, within [`PUSHBACK_BUDGET`].
pub async fn retrying<T, F, Fut>(attempt: F) -> Result<T, ControlError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ControlError>>,
{
    let hint = |e: &ControlError| match e {
        ControlError::Status(s) => pushback::retry_after(s),
        _ => None,
    };
    retry_refused(PUSHBACK_BUDGET, hint, attempt).await.0
}

/// Runs `attempt` until its error carries no pushback hint (`hint_of`: a RESOURCE_EXHAUSTED
/// refusal's `grpc-retry-pushback-ms`), or until waiting the longer of the hint and the
/// backoff would pass `budget`. Returns the last answer and how many refusals came before
/// it. `strata-node`'s calls go through [`retrying`]; the scale bench's simulated nodes and
/// the admission tests call this with their own budget.
pub async fn retry_refused<T, E, F, Fut>(
    budget: Duration,
    hint_of: impl Fn(&E) -> Option<Duration>,
    mut attempt: F,
) -> (Result<T, E>, u32)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + budget;
    let mut backoff = Backoff::new(FIRST, MAX);
    let mut refusals = 0;
    loop {
        let result = attempt().await;
        let Some(hint) = result.as_ref().err().and_then(&hint_of) else {
            return (result, refusals);
        };
        refusals += 1;
        let wait = hint.max(backoff.next_delay());
        if Instant::now() + wait > deadline {
            return (result, refusals);
        }
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use tonic::{Code, Status};

    use super::*;

    fn refused(ms: u64) -> ControlError {
        pushback::resource_exhausted("busy", Duration::from_millis(ms)).into()
    }

    #[tokio::test(start_paused = true)]
    async fn waits_the_hint_or_the_backoff_whichever_is_longer_then_succeeds() {
        let calls = AtomicU32::new(0);
        let t0 = Instant::now();
        let out = retrying(|| {
            let n = calls.fetch_add(1, Ordering::Relaxed);
            async move {
                match n {
                    0 => Err(refused(300)), // hint 300 > backoff 50
                    1 => Err(refused(10)),  // backoff 100 > hint 10
                    _ => Ok(7),
                }
            }
        })
        .await;
        assert_eq!(out.ok(), Some(7));
        assert_eq!(calls.load(Ordering::Relaxed), 3);
        assert_eq!(t0.elapsed(), Duration::from_millis(400));
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_with_the_refusal_within_the_budget() {
        let calls = AtomicU32::new(0);
        let t0 = Instant::now();
        let out: Result<(), _> = retrying(|| {
            calls.fetch_add(1, Ordering::Relaxed);
            async { Err(refused(1_000)) }
        })
        .await;
        let e = out.err().map(|e| e.code());
        assert_eq!(e, Some(Code::ResourceExhausted));
        assert!(t0.elapsed() <= PUSHBACK_BUDGET);
        assert_eq!(calls.load(Ordering::Relaxed), 7);
    }

    #[tokio::test(start_paused = true)]
    async fn other_errors_are_not_retried() {
        let calls = AtomicU32::new(0);
        let out: Result<(), _> = retrying(|| {
            calls.fetch_add(1, Ordering::Relaxed);
            async { Err(Status::not_found("no such stream").into()) }
        })
        .await;
        assert_eq!(out.err().map(|e| e.code()), Some(Code::NotFound));
        assert_eq!(calls.load(Ordering::Relaxed), 1);
    }
}
