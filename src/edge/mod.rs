//! The public edge on the HTTP and HTTPS listeners. For now it answers every host with the
//! "no app here" page; Host routing, TLS and proxying to instances arrive with the edge
//! work (issue: "The edge").

use std::net::SocketAddr;

use axum::{
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Router,
};
use tokio::net::TcpListener;

use crate::state::AppState;

/// Serves both edge listeners until `stopped` completes.
pub async fn serve(
    _app: AppState,
    http: TcpListener,
    https: TcpListener,
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_https_tx, stop_https_rx) = tokio::sync::oneshot::channel::<()>();
    // Until certificates exist there is nothing to serve over TLS: connections are closed
    // at once rather than left hanging in the accept queue.
    let https_task = tokio::spawn(async move {
        tokio::select! {
            _ = stop_https_rx => {}
            _ = async {
                loop {
                    match https.accept().await {
                        Ok((stream, peer)) => {
                            tracing::debug!(%peer, "https edge: no certificates yet; closing");
                            drop(stream);
                        }
                        Err(err) => tracing::warn!(error = %err, "https edge accept failed"),
                    }
                }
            } => {}
        }
    });
    let router = Router::new().fallback(unknown_host);
    let result = axum::serve(
        http,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stopped)
    .await;
    let _ = stop_https_tx.send(());
    let _ = https_task.await;
    result
}

/// The page for a host no project answers to; `{host}` is replaced, escaped.
const UNKNOWN_HOST_PAGE: &str = include_str!("../../assets/edge/unknown-host.html");

/// The plain 404 page for a host no project answers to.
async fn unknown_host(headers: HeaderMap) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("this host");
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        UNKNOWN_HOST_PAGE.replace("{host}", &html_escape(host)),
    )
        .into_response()
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
