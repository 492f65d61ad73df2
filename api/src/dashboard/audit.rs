//! `/dashboard/audit`: the audit trail, newest first, filtered by actor (an id, or part of a
//! name), action and time (UTC dates, `from` inclusive, `to` inclusive), paged by sequence
//! number. Every role may read it. `statement-api audit verify` checks the chain.

use maud::html;
use poem::{Request, handler, web::Data};
use shared::audit::{self, Filter};

use super::{DashboardError, Page, layout, query_date, query_text, signed_in};
use crate::AppState;

/// Rows per page.
const PAGE: usize = 100;

#[handler]
pub(crate) async fn page(Data(state): Data<&AppState>, req: &Request) -> Page {
    let admin = signed_in(state, req).await?;
    let text = |name: &str| query_text(req, name);
    let (from_day, to_day) = (query_date(req, "from")?, query_date(req, "to")?);
    let actor = text("actor").filter(|a| a.chars().count() <= 200);
    let action = text("action").filter(|a| a.len() <= 100);
    let before =
        text("before").map(|b| b.parse::<i64>()).transpose().map_err(|_| DashboardError::NotFound)?;
    let filter = Filter {
        actor: actor.clone(),
        action: action.clone(),
        from: from_day.map(|d| d.midnight().assume_utc()),
        to: to_day.and_then(|d| d.next_day()).map(|d| d.midnight().assume_utc()),
        before,
    };
    let db = state.db_for_dashboard().await?;
    let mut entries = audit::page(&db, &filter, PAGE as i64 + 1).await?;
    let older = entries.len() > PAGE;
    entries.truncate(PAGE);
    let actions = audit::actions(&db).await?;
    let mut next = vec![("before".to_owned(), entries.last().map_or(0, |e| e.seq).to_string())];
    for (name, value) in [("actor", &actor), ("action", &action)] {
        if let Some(value) = value {
            next.push((name.to_owned(), value.clone()));
        }
    }
    for (name, value) in [("from", from_day), ("to", to_day)] {
        if let Some(value) = value {
            next.push((name.to_owned(), value.to_string()));
        }
    }
    let next = serde_urlencoded::to_string(&next).unwrap_or_default();
    let body = html! {
        form.filters method="get" action="/dashboard/audit" {
            label for="actor" { "Actor" }
            input #actor type="text" name="actor" maxlength="200" value=[actor.as_deref()] placeholder="name, e-mail or id";
            label for="action" { "Action" }
            select #action name="action" {
                option value="" { "any" }
                @for a in &actions {
                    option value=(a) selected[action.as_deref() == Some(a.as_str())] { (a) }
                }
            }
            label for="from" { "From" }
            input #from type="date" name="from" value=[from_day.map(|d| d.to_string())];
            label for="to" { "To" }
            input #to type="date" name="to" value=[to_day.map(|d| d.to_string())];
            button type="submit" { "Filter" }
            " " a href="/dashboard/audit" { "Clear" }
        }
        table #audit {
            thead { tr {
                th.num { "#" } th { "Time" } th { "Actor" } th { "Action" } th { "Target" } th { "Outcome" }
                th { "Client" } th { "Details" }
            } }
            tbody {
                @for e in &entries {
                    tr {
                        td.num { (e.seq) }
                        td { (layout::timestamp(e.at)) }
                        td { (e.actor_name) br; span.hint { (e.actor_kind) " " span.mono { (e.actor_id) } } }
                        td.mono { (e.action) }
                        td.mono { (e.target.as_deref().unwrap_or("—")) }
                        td {
                            @match e.outcome.as_str() {
                                "success" => span.ok { (e.outcome) },
                                "denied" | "failed" => span.bad { (e.outcome) },
                                _ => span.muted { (e.outcome) },
                            }
                        }
                        td.mono { (e.client_addr.as_deref().unwrap_or("—")) }
                        td.mono { (e.details) }
                    }
                }
                @if entries.is_empty() { tr { td colspan="8" { "Nothing recorded matches." } } }
            }
        }
        p.pager {
            @if before.is_some() { a href="/dashboard/audit" { "Newest" } " " }
            @if older { a href={ "/dashboard/audit?" (next) } { "Older →" } }
        }
        p.hint { "Rows are chained by SHA-256; " code { "statement-api audit verify" } " checks the whole chain." }
    };
    Ok(layout::html(layout::page(&admin, "/dashboard/audit", "Audit", layout::Refresh::UnlessEditing, body)))
}
