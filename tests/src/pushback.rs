//! What a node does when the control plane refuses a claim RESOURCE_EXHAUSTED (admission
//! control): waits the longer of the `grpc-retry-pushback-ms` hint and its backoff
//! (`strata_common::backoff`), then asks again. The scale bench's simulated nodes and the
//! admission tests use this, as `strata-node` does (`data-plane/node/src/control/pushback.rs`).

use std::future::Future;
use std::time::Duration;

use strata_common::backoff::Backoff;
use strata_proto::pushback;
use tokio::time::Instant;

/// A call's outcome after its refusals.
#[derive(Debug)]
pub struct Retried<T> {
    /// The last answer: success, the last refusal once `budget` was spent, or another error.
    pub result: Result<T, tonic::Status>,
    /// Refusals (RESOURCE_EXHAUSTED) before it.
    pub refusals: u32,
}

/// Runs `attempt` until it is not refused RESOURCE_EXHAUSTED or waiting again would pass
/// `budget`.
pub async fn retrying<T, F, Fut>(budget: Duration, mut attempt: F) -> Retried<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let deadline = Instant::now() + budget;
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
    let mut refusals = 0;
    loop {
        let result = attempt().await;
        let hint = match &result {
            Err(s) => pushback::retry_after(s),
            Ok(_) => None,
        };
        let Some(hint) = hint else {
            return Retried { result, refusals };
        };
        refusals += 1;
        let wait = hint.max(backoff.next_delay());
        if Instant::now() + wait > deadline {
            return Retried { result, refusals };
        }
        tokio::time::sleep(wait).await;
    }
}
