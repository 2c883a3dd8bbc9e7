//! A small plain-HTTP admin listener: `/livez`, `/readyz`, `/metrics` and, on the
//! hub, `/tunnels`.

use crate::plugin::PluginHost;
use crate::proxy::body::{full, Body};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Answers an admin path with a status, content type and body.
pub type AdminRoutes = Arc<dyn Fn(&str) -> (StatusCode, &'static str, String) + Send + Sync>;

/// Serves the admin listener until `shutdown` fires. With a plugin host, its routes
/// (`POST /plugins/reload`, `GET /plugins/status`, `GET /plugins/metrics`) are served too.
pub async fn serve_admin(
    listener: TcpListener,
    routes: AdminRoutes,
    plugins: Option<Arc<PluginHost>>,
    shutdown: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    crate::listen::pause_after_accept_error().await;
                    continue;
                }
            },
        };
        let (routes, plugins) = (routes.clone(), plugins.clone());
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let (routes, plugins) = (routes.clone(), plugins.clone());
            async move {
                let path = req.uri().path();
                let plugin_answer = match &plugins {
                    Some(host) if path.starts_with("/plugins/") => {
                        host.admin(req.method(), path).await
                    }
                    _ => None,
                };
                let (code, ctype, text) = match plugin_answer {
                    Some((code, text)) if path.ends_with("/metrics") => {
                        (code, "text/plain; version=0.0.4", text)
                    }
                    Some((code, text)) => (code, "application/json", text),
                    None => routes(path),
                };
                let mut resp: Response<Body> = Response::new(full(text));
                *resp.status_mut() = code;
                if let Ok(v) = http::HeaderValue::from_str(ctype) {
                    resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
                }
                Ok::<_, std::convert::Infallible>(resp)
            }
        });
        tokio::spawn(
            async move {
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "admin connection failed");
                }
            }
            .instrument(tracing::debug_span!("admin")),
        );
    }
}

/// The answer for a path no route knows.
pub fn not_found() -> (StatusCode, &'static str, String) {
    (StatusCode::NOT_FOUND, "text/plain", "not found\n".into())
}
