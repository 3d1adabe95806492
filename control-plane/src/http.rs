//! The control plane's HTTP side: `/healthz` and `/metrics`.

use axum::Router;
use axum::extract::State as AxState;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tracing::warn;

use crate::service::State;

/// Serves HTTP on `listener` until the process ends.
pub async fn serve(listener: TcpListener, state: State) {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state);
    if let Err(e) = axum::serve(listener, app).await {
        warn!(error = %e, "HTTP server stopped");
    }
}

async fn healthz(AxState(state): AxState<State>) -> impl IntoResponse {
    if state.cache().is_healthy() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "store unreachable\n")
    }
}

async fn metrics(AxState(state): AxState<State>) -> impl IntoResponse {
    let gauges = {
        let view = state.cache().read();
        let mut per_region = std::collections::BTreeMap::<String, f64>::new();
        for n in view.nodes.values() {
            *per_region.entry(n.value.region.clone()).or_default() += 1.0;
        }
        vec![
            (
                "strata_control_nodes",
                "Live nodes per region",
                per_region
                    .into_iter()
                    .map(|(r, n)| (format!("{{region=\"{r}\"}}"), n))
                    .collect(),
            ),
            (
                "strata_control_streams",
                "Live streams",
                vec![(
                    String::new(),
                    view.streams.values().filter(|s| s.main.is_some()).count() as f64,
                )],
            ),
            (
                "strata_control_store_healthy",
                "1 when the store is reachable and the cache in sync",
                vec![(
                    String::new(),
                    if state.cache().is_healthy() { 1.0 } else { 0.0 },
                )],
            ),
        ]
    };
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics().render(&gauges),
    )
}
