//! The HTTP endpoints: /metrics (Prometheus text), /healthz (process up), /readyz (every
//! connector running; 503 otherwise, with each connector's state in the body).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use super::health::{self, Health};

#[derive(Clone)]
struct AppState {
    prometheus: PrometheusHandle,
    health: Arc<Health>,
}

/// Binds now (so a taken port is a startup error) and serves until `stop`.
pub async fn serve(
    listen: SocketAddr,
    prometheus: PrometheusHandle,
    health: Arc<Health>,
    stop: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("worker.listen {listen}: {e}"))?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(AppState { prometheus, health });
    tracing::info!(%listen, "serving /metrics, /healthz, /readyz");
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
    }))
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    super::events::publish_staleness();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.prometheus.render(),
    )
}

async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    let states = s.health.snapshot();
    let status = if health::is_ready(&states) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, health::describe(&states))
}
