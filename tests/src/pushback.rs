//! What a node does when the control plane refuses a claim RESOURCE_EXHAUSTED (admission
//! control), for the scale bench's simulated nodes and the admission tests: the node's own
//! loop (`strata_node::control::pushback::retry_refused`: the longer of the
//! `grpc-retry-pushback-ms` hint and the backoff, within a budget), with the refusals counted.

use std::future::Future;
use std::time::Duration;

use strata_node::control::pushback::retry_refused;
use strata_proto::pushback;

/// A call's outcome after its refusals.
#[derive(Debug)]
pub struct Retried<T> {
    /// The last answer: success, the last refusal once `budget` was spent, or another error.
    pub result: Result<T, tonic::Status>,
    /// Refusals (RESOURCE_EXHAUSTED) before it.
    pub refusals: u32,
}

/// Runs `attempt` until it is not refused RESOURCE_EXHAUSTED or waiting again would pass
/// `budget` (`strata_node::control::pushback::retry_refused`).
pub async fn retrying<T, F, Fut>(budget: Duration, attempt: F) -> Retried<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let (result, refusals) = retry_refused(budget, pushback::retry_after, attempt).await;
    Retried { result, refusals }
}
