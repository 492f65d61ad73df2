//! `GET /metrics`: the API's instruments and the queue gauges in the Prometheus text format.
//! Queue figures are read from Postgres at scrape time; when Postgres does not answer within a
//! second, the gauges keep their previous values and the scrape still succeeds. Postgres is read
//! at most once a second, however often `/metrics` is fetched.

use std::time::Duration;

use poem::{Response, handler, web::Data};
use shared::metrics::{CONTENT_TYPE, queue_snapshot};

use crate::AppState;

const QUEUE_READ_TIMEOUT: Duration = Duration::from_secs(1);
/// Scrapes closer together than this reuse the last queue read (one query per second at most,
/// however often `/metrics` is fetched).
const QUEUE_READ_INTERVAL: Duration = Duration::from_secs(1);

#[handler]
pub async fn scrape(Data(state): Data<&AppState>) -> Response {
    if state.metrics.queue_read_is_fresh(QUEUE_READ_INTERVAL) {
        return render(state);
    }
    let read = async {
        let db = state.pool.get().await.map_err(|e| e.to_string())?;
        queue_snapshot(&db, shared::workers::ALIVE_WITHIN).await.map_err(|e| e.to_string())
    };
    match tokio::time::timeout(QUEUE_READ_TIMEOUT, read).await {
        Ok(Ok(snapshot)) => state.metrics.set_queue(snapshot),
        Ok(Err(e)) => tracing::warn!(error = %e, "metrics: could not read the queue"),
        Err(_) => tracing::warn!("metrics: reading the queue timed out"),
    }
    render(state)
}

fn render(state: &AppState) -> Response {
    Response::builder().content_type(CONTENT_TYPE).body(state.metrics.render())
}

/// The route a path belongs to, with its variable parts named (metric labels must not grow
/// with ids). Paths outside the service's routes are `other`.
pub fn route_template(path: &str) -> &'static str {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    match segments.as_slice() {
        ["api", "export"] => "/api/export",
        ["api", "export", _] => "/api/export/{reference_id}",
        ["api", "export", _, "cancel"] => "/api/export/{reference_id}/cancel",
        ["api", "exports"] => "/api/exports",
        ["health"] => "/health",
        ["ready"] => "/ready",
        ["metrics"] => "/metrics",
        ["openapi.json"] => "/openapi.json",
        ["openapi.yaml"] => "/openapi.yaml",
        ["docs", ..] => "/docs",
        ["files", ..] => "/files/{key}",
        [] => "/",
        ["dashboard"] => "/dashboard",
        ["dashboard", "exports", _] => "/dashboard/exports/{id}",
        ["dashboard", "jobs", _, _] => "/dashboard/jobs/{id}/{action}",
        ["dashboard", "assets", _] => "/dashboard/assets",
        ["dashboard", "sign-in"] => "/dashboard/sign-in",
        ["dashboard", "sign-out"] => "/dashboard/sign-out",
        ["dashboard", "queue"] => "/dashboard/queue",
        ["dashboard", "health"] => "/dashboard/health",
        ["admin", "api-keys"] => "/admin/api-keys",
        ["admin", "api-keys", _, _] => "/admin/api-keys/{id}/{action}",
        _ => "other",
    }
}

/// The method as a label: the standard ones by name, anything else `OTHER` (a client may send
/// any token as a method; labels must not grow with them).
pub fn method_label(method: &poem::http::Method) -> &'static str {
    use poem::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::{method_label, route_template};

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(method_label(&poem::http::Method::GET), "GET");
        assert_eq!(method_label(&poem::http::Method::from_bytes(b"BREW").unwrap()), "OTHER");
    }

    #[test]
    fn ids_and_keys_collapse_into_their_route() {
        assert_eq!(
            route_template("/api/export/0b6f0f0e-1111-4222-8333-444455556666"),
            "/api/export/{reference_id}"
        );
        assert_eq!(route_template("/api/export/x/cancel"), "/api/export/{reference_id}/cancel");
        assert_eq!(route_template("/files/exports/a/8c1f0e2d/s.csv"), "/files/{key}");
        assert_eq!(route_template("/dashboard/"), "/dashboard");
        assert_eq!(route_template("/"), "/");
        assert_eq!(route_template("/wp-login.php"), "other");
        assert_eq!(route_template("/api/export/a/b/c/d"), "other");
    }
}
