//! `/dashboard/webhooks`: every key's webhook endpoints with their health (enabled, failing
//! since, disabled; the last 24 hours' deliveries by outcome), and each endpoint's delivery log
//! with its attempts. An operator resends a delivery (the same event, same `webhook-id`); an
//! admin enables a disabled endpoint again. Endpoint URLs are shown by host only: a path may
//! carry a receiver's token.

use maud::{Markup, html};
use poem::{
    Request, handler,
    web::{Data, Path},
};
use shared::{
    audit::{self, Outcome},
    db::DbError,
    operators::DashboardRole,
    webhooks::{
        self, Endpoint,
        deliveries::{self, Delivery, DeliveryStatus, Health, Resent},
    },
};

use super::{Admin, DashboardError, Page, SignedAction, layout, query_param, see_other, signed_in};
use crate::AppState;

/// Endpoints listed at most (newest first).
const MAX_ENDPOINTS: i64 = 500;
/// Deliveries per page of an endpoint's log.
const PAGE: usize = 50;

/// An endpoint's URL as the dashboard shows it: scheme and host (and port), no path.
fn shown_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) => {
            let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!("{}://{}{port}/…", parsed.scheme(), parsed.host_str().unwrap_or("?"))
        }
        Err(_) => "(unreadable URL)".to_owned(),
    }
}

fn state_of(endpoint: &Endpoint) -> Markup {
    html! {
        @if let Some(at) = endpoint.disabled_at {
            span.bad title="Failed for WEBHOOK_DISABLE_AFTER_SECS: no delivery is sent until it is enabled again" {
                "disabled " (layout::timestamp(at))
            }
        } @else if let Some(since) = endpoint.failing_since {
            span.bad { "failing since " (layout::timestamp(since)) }
        } @else {
            span.ok { "enabled" }
        }
    }
}

fn health_of(health: Option<&Health>) -> Markup {
    let health = health.cloned().unwrap_or_default();
    html! {
        span.ok { (health.succeeded) " delivered" } ", "
        @if health.failed > 0 { span.bad { (health.failed) " failed" } } @else { "0 failed" } ", "
        (health.in_flight) " in flight"
    }
}

#[handler]
pub(crate) async fn list(Data(state): Data<&AppState>, req: &Request) -> Page {
    let admin = signed_in(state, req).await?;
    let db = state.db_for_dashboard().await?;
    let endpoints = webhooks::all(&db, MAX_ENDPOINTS).await?;
    let ids: Vec<uuid::Uuid> = endpoints.iter().map(|(e, _)| e.id).collect();
    let health = deliveries::health(&db, &ids).await?;
    let notice = super::notice_code(req).and_then(notice_text);
    let body = html! {
        @if let Some(text) = notice { p.notice { (text) } }
        p.hint { "Endpoints are registered by clients with their API keys (" code { "POST /api/webhook-endpoints" } "). Health counts the last 24 hours." }
        table #endpoints {
            thead { tr {
                th { "Endpoint" } th { "Key" } th { "Events" } th { "State" } th { "Last 24 h" } th { "Registered" }
            } }
            tbody {
                @for (endpoint, key) in &endpoints {
                    tr {
                        td {
                            a.mono href={ "/dashboard/webhooks/" (endpoint.id) } { (shown_url(&endpoint.url)) }
                            @if !endpoint.description.is_empty() { br; span.hint { (endpoint.description) } }
                        }
                        td { (key) }
                        td.mono { @for (i, event) in endpoint.event_types.iter().enumerate() { @if i > 0 { br; } (event.as_str()) } }
                        td { (state_of(endpoint)) }
                        td { (health_of(health.iter().find(|(id, _)| *id == endpoint.id).map(|(_, h)| h))) }
                        td { (layout::timestamp(endpoint.created_at)) }
                    }
                }
                @if endpoints.is_empty() { tr { td colspan="6" { "No endpoint is registered." } } }
            }
        }
    };
    Ok(layout::html(layout::page(&admin, "/dashboard/webhooks", "Webhooks", layout::Refresh::Always, body)))
}

#[handler]
pub(crate) async fn detail(Data(state): Data<&AppState>, req: &Request, Path(id): Path<String>) -> Page {
    let admin = signed_in(state, req).await?;
    let id = uuid::Uuid::parse_str(&id).map_err(|_| DashboardError::NotFound)?;
    let after = query_param(req, "after").and_then(|a| uuid::Uuid::parse_str(&a).ok());
    let db = state.db_for_dashboard().await?;
    let endpoint = webhooks::find(&db, id).await?.ok_or(DashboardError::NotFound)?;
    let mut log = match deliveries::page(&db, id, after, PAGE as i64 + 1).await {
        Ok(log) => log,
        Err(deliveries::PageError::UnknownCursor) => {
            deliveries::page(&db, id, None, PAGE as i64 + 1).await.map_err(|e| match e {
                deliveries::PageError::Db(e) => DashboardError::Db(e),
                deliveries::PageError::UnknownCursor => DashboardError::NotFound,
            })?
        }
        Err(deliveries::PageError::Db(e)) => return Err(e.into()),
    };
    let older = log.len() > PAGE;
    log.truncate(PAGE);
    let notice = super::notice_code(req).and_then(notice_text);
    let body = html! {
        @if let Some(text) = notice { p.notice { (text) } }
        dl.facts {
            dt { "URL" } dd.mono { (shown_url(&endpoint.url)) }
            dt { "Description" } dd { (layout::or_dash(Some(endpoint.description.clone()).filter(|d| !d.is_empty()))) }
            dt { "Events" } dd.mono { (endpoint.event_types.iter().map(|e| e.as_str()).collect::<Vec<_>>().join(", ")) }
            dt { "State" } dd { (state_of(&endpoint)) }
            dt { "Registered" } dd { (layout::timestamp(endpoint.created_at)) }
            dt { "Secret rotated" } dd { (layout::or_dash(endpoint.secret_rotated_at.map(layout::timestamp))) }
        }
        @if endpoint.disabled_at.is_some() && admin.may(DashboardRole::Admin) {
            p { (layout::action_button(&admin, &format!("/dashboard/webhooks/{id}/enable"), "Enable again", Some("primary"))) }
        }
        h2 { "Deliveries" }
        table #deliveries {
            thead { tr {
                th { "Event" } th { "Export" } th { "Status" } th.num { "Attempts" } th { "Last answer" }
                th.num { "Latency" } th { "Next attempt" } th { "Created" } th { "" }
            } }
            tbody {
                @for delivery in &log { (delivery_row(&admin, delivery)) }
                @if log.is_empty() { tr { td colspan="9" { "No delivery yet." } } }
            }
        }
        p.pager {
            @if after.is_some() { a href={ "/dashboard/webhooks/" (id) } { "Newest" } " " }
            @if let (true, Some(last)) = (older, log.last()) {
                a href={ "/dashboard/webhooks/" (id) "?after=" (last.id) } { "Older →" }
            }
        }
    };
    Ok(layout::html(layout::page(
        &admin,
        "/dashboard/webhooks",
        "Webhook endpoint",
        layout::Refresh::Always,
        body,
    )))
}

fn delivery_row(admin: &Admin, delivery: &Delivery) -> Markup {
    let last = delivery.last_attempt();
    html! {
        tr {
            td.mono { (delivery.event_type.as_str()) br; span.hint { (delivery.event_id) } }
            td { a.mono href={ "/dashboard/exports/" (delivery.export_id) } { (delivery.export_id) } }
            td {
                @match delivery.status {
                    DeliveryStatus::Succeeded => span.ok { "succeeded" },
                    DeliveryStatus::Failed | DeliveryStatus::Disabled => span.bad { (delivery.status.as_str()) },
                    _ => span.muted { (delivery.status.as_str()) },
                }
            }
            td.num { (delivery.attempts.len()) }
            td {
                @match last {
                    Some(attempt) => {
                        @if let Some(code) = attempt.response_status { "HTTP " (code) }
                        @if let Some(error) = attempt.error { " " span.bad { (error.as_str()) } }
                    }
                    None => { "—" }
                }
            }
            td.num { (layout::or_dash(last.and_then(|a| a.latency_ms).map(|ms| format!("{ms:.0} ms")))) }
            td { (layout::or_dash(delivery.next_attempt_at.map(layout::timestamp))) }
            td { (layout::timestamp(delivery.created_at)) }
            td {
                @if admin.may(DashboardRole::Operator)
                    && !matches!(delivery.status, DeliveryStatus::Pending | DeliveryStatus::Retrying) {
                    (layout::action_button(admin, &format!("/dashboard/webhook-deliveries/{}/resend", delivery.id), "Resend", None))
                }
            }
        }
    }
}

fn notice_text(code: &str) -> Option<&'static str> {
    Some(match code {
        "resent" => {
            "The delivery is queued again: the same event, with the same webhook-id, goes out at once."
        }
        "in-flight" => "That delivery is still under way: nothing changed.",
        "disabled" => "The endpoint is disabled: enable it first.",
        "enabled" => {
            "The endpoint is enabled again; deliveries that were not sent while it was disabled stay unsent (resend them one by one, or the owner may with ?resend=true)."
        }
        _ => return None,
    })
}

/// `POST /dashboard/webhook-deliveries/{id}/resend` (operators): recorded with its outcome in
/// the transaction that queues it.
#[handler]
pub(crate) async fn resend(Data(state): Data<&AppState>, form: SignedAction<uuid::Uuid>) -> Page {
    let SignedAction { admin, id, action } = form;
    if action != "resend" {
        return Err(DashboardError::NotFound);
    }
    let target = Some(format!("webhook_delivery:{id}"));
    admin.require(state, DashboardRole::Operator, "webhook.resend", target.clone()).await?;
    let mut db = state.db_for_dashboard().await?;
    let endpoint_id = deliveries::endpoint_of(&db, id).await?.ok_or(DashboardError::NotFound)?;
    let endpoint = webhooks::find(&db, endpoint_id).await?.ok_or(DashboardError::NotFound)?;
    let mut tx = db.transaction().await.map_err(DbError::from)?;
    let (notice, outcome) = if endpoint.disabled_at.is_some() {
        ("disabled", Outcome::Unchanged)
    } else {
        match deliveries::resend(&mut tx, endpoint_id, id).await? {
            Resent::Queued(_) => ("resent", Outcome::Success),
            Resent::InFlight(_) => ("in-flight", Outcome::Unchanged),
            Resent::NotFound => return Err(DashboardError::NotFound),
        }
    };
    let details = serde_json::json!({ "endpoint": endpoint_id, "result": notice });
    audit::record(&tx, &[admin.event("webhook.resend", target, outcome).with_details(details)]).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(see_other(&format!("/dashboard/webhooks/{endpoint_id}?notice={notice}")))
}

/// `POST /dashboard/webhooks/{id}/enable` (admins).
#[handler]
pub(crate) async fn enable(Data(state): Data<&AppState>, form: SignedAction<uuid::Uuid>) -> Page {
    let SignedAction { admin, id, action } = form;
    if action != "enable" {
        return Err(DashboardError::NotFound);
    }
    let target = Some(format!("webhook_endpoint:{id}"));
    admin.require(state, DashboardRole::Admin, "webhook_endpoint.enable", target.clone()).await?;
    let mut db = state.db_for_dashboard().await?;
    let endpoint = webhooks::find(&db, id).await?.ok_or(DashboardError::NotFound)?;
    let mut tx = db.transaction().await.map_err(DbError::from)?;
    let enabled = webhooks::enable(&mut tx, endpoint.api_key_id, id, false).await?;
    let outcome = if enabled.is_some() { Outcome::Success } else { Outcome::NotFound };
    let details = serde_json::json!({ "resend": false });
    audit::record(&tx, &[admin.event("webhook_endpoint.enable", target, outcome).with_details(details)])
        .await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(see_other(&format!("/dashboard/webhooks/{id}?notice=enabled")))
}
