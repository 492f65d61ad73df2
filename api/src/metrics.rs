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
pub(crate) async fn scrape(Data(state): Data<&AppState>) -> Response {
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

/// The method as a label: the standard ones by name, anything else `OTHER` (a client may send
/// any token as a method; labels must not grow with them).
pub(crate) fn method_label(method: &poem::http::Method) -> &'static str {
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
    use super::method_label;

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(method_label(&poem::http::Method::GET), "GET");
        assert_eq!(method_label(&poem::http::Method::from_bytes(b"BREW").unwrap()), "OTHER");
    }
}
