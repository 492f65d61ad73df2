//! `/dashboard/schedules`: every key's recurring statements (what, how often, where they stand,
//! how their last run went), and each schedule's page with its next period and its latest runs
//! linked to their exports. Read-only for every role: schedules belong to their keys' clients
//! (`/api/schedules`).

use maud::{Markup, html};
use poem::{
    Request, handler,
    web::{Data, Path},
};
use shared::{
    api_keys,
    schedules::{
        calendar::{Frequency, Period},
        store::{self, Run, Schedule},
    },
    sessions::key_label,
};
use uuid::Uuid;

use super::{DashboardError, Page, layout, query_param, signed_in};
use crate::AppState;

/// Schedules per page of the list.
const PAGE: usize = 100;
/// Runs listed on a schedule's page (the newest periods).
const RUNS: i64 = 50;

/// `daily`, `weekly on monday`, `monthly on day 31`, `quarterly on day 1`.
fn frequency_text(frequency: &Frequency) -> String {
    match (frequency.weekday(), frequency.day_of_month()) {
        (Some(weekday), _) => format!("{} on {weekday}", frequency.kind()),
        (None, Some(day)) => format!("{} on day {day}", frequency.kind()),
        (None, None) => frequency.kind().to_owned(),
    }
}

fn accounts_text(schedule: &Schedule) -> String {
    match &schedule.accounts {
        None => "all".to_owned(),
        Some(accounts) if accounts.len() <= 3 => accounts.join(", "),
        Some(accounts) => format!("{}, … ({} accounts)", accounts[..2].join(", "), accounts.len()),
    }
}

fn period_text(period: &Period) -> String {
    if period.first == period.last {
        period.first.to_string()
    } else {
        format!("{} – {}", period.first, period.last)
    }
}

fn state_of(schedule: &Schedule) -> Markup {
    html! {
        @if let Some(at) = schedule.paused_at {
            span.warn { "paused " (layout::timestamp(at)) }
        } @else {
            span.ok { "active" }
        }
    }
}

/// A run's export state: its status (or why there is none yet).
fn run_state(run: &Run) -> Markup {
    html! {
        @match (run.export_id, run.status) {
            (_, Some(status)) => (layout::status(status)),
            (None, _) => span.muted { "not asked for yet" },
            (Some(_), None) => span.muted { "export deleted" },
        }
    }
}

/// Key labels by id.
async fn key_labels(db: &deadpool_postgres::Object) -> Result<Vec<(Uuid, String)>, DashboardError> {
    Ok(api_keys::list(db).await?.into_iter().map(|k| (k.id, key_label(&k.name, &k.prefix))).collect())
}

fn label_of(labels: &[(Uuid, String)], id: Uuid) -> String {
    labels.iter().find(|(k, _)| *k == id).map_or_else(|| id.to_string(), |(_, label)| label.clone())
}

#[handler]
pub(crate) async fn list(Data(state): Data<&AppState>, req: &Request) -> Page {
    let admin = signed_in(state, req).await?;
    let after = query_param(req, "after").and_then(|a| Uuid::parse_str(&a).ok());
    let db = state.db_for_dashboard().await?;
    let mut schedules = store::list(&db, None, after, PAGE as i64 + 1).await?;
    let more = schedules.len() > PAGE;
    schedules.truncate(PAGE);
    let ids: Vec<Uuid> = schedules.iter().map(|s| s.id).collect();
    let last_runs = store::last_runs(&db, &ids).await?;
    let labels = key_labels(&db).await?;
    let body = html! {
        p.hint { "Schedules are created by clients with their API keys (" code { "POST /api/schedules" } "). Times are UTC; periods are days in each schedule's zone." }
        table #schedules {
            thead { tr {
                th { "Schedule" } th { "Key" } th { "Accounts" } th { "Table" } th { "Format" } th { "Frequency" }
                th { "Zone" } th { "Next period" } th { "Due" } th { "State" } th { "Last run" }
            } }
            tbody {
                @for schedule in &schedules {
                    tr {
                        td { a href={ "/dashboard/schedules/" (schedule.id) } {
                            @if schedule.name.is_empty() { span.mono { (schedule.id.to_string()[..8]) "…" } } @else { (schedule.name) }
                        } }
                        td { (label_of(&labels, schedule.api_key_id)) }
                        td { (accounts_text(schedule)) }
                        td { (schedule.table_name) }
                        td.mono { (schedule.format.as_str()) }
                        td { (frequency_text(&schedule.frequency)) }
                        td { (schedule.time_zone.name()) }
                        td { (period_text(&schedule.next_period)) }
                        td { (layout::timestamp(schedule.next_due_at)) }
                        td { (state_of(schedule)) }
                        td {
                            @match last_runs.iter().find(|r| r.schedule_id == schedule.id) {
                                Some(run) => { (run_state(run)) " " span.hint { (period_text(&run.period)) } },
                                None => span.muted { "none yet" },
                            }
                        }
                    }
                }
                @if schedules.is_empty() { tr { td colspan="11" { "No schedule yet." } } }
            }
        }
        p.pager {
            @if after.is_some() { a href="/dashboard/schedules" { "First" } " " }
            @if let (true, Some(last)) = (more, schedules.last()) {
                a href={ "/dashboard/schedules?after=" (last.id) } { "Next →" }
            }
        }
    };
    Ok(layout::html(layout::page(&admin, "/dashboard/schedules", "Schedules", layout::Refresh::Always, body)))
}

#[handler]
pub(crate) async fn detail(Data(state): Data<&AppState>, req: &Request, Path(id): Path<String>) -> Page {
    let admin = signed_in(state, req).await?;
    let id = Uuid::parse_str(&id).map_err(|_| DashboardError::NotFound)?;
    let db = state.db_for_dashboard().await?;
    let schedule = store::get_any(&db, id).await?.ok_or(DashboardError::NotFound)?;
    let runs = store::runs(&db, id, RUNS).await?;
    let labels = key_labels(&db).await?;
    let title =
        if schedule.name.is_empty() { "Schedule".to_owned() } else { format!("Schedule: {}", schedule.name) };
    let body = html! {
        dl.facts {
            dt { "Id" } dd.mono { (schedule.id) }
            dt { "Key" } dd { (label_of(&labels, schedule.api_key_id)) }
            dt { "Accounts" } dd {
                @match &schedule.accounts {
                    None => "every account the key may read",
                    Some(accounts) => (accounts.join(", ")),
                }
            }
            dt { "Table" } dd { (schedule.table_name) }
            dt { "Format" } dd.mono { (schedule.format.as_str()) }
            dt { "Frequency" } dd { (frequency_text(&schedule.frequency)) }
            dt { "Time zone" } dd { (schedule.time_zone.name()) }
            dt { "Delay" } dd { (schedule.delay_minutes) " min after the period closes (local midnight)" }
            dt { "Starts on" } dd { (schedule.starts_on) }
            dt { "State" } dd { (state_of(&schedule)) }
            dt { "Next period" } dd #next-period { (period_text(&schedule.next_period)) }
            dt { "Next due" } dd { (layout::timestamp(schedule.next_due_at)) }
            dt { "Created" } dd { (layout::timestamp(schedule.created_at)) }
            dt { "Changed" } dd { (layout::timestamp(schedule.updated_at)) }
        }
        h2 { "Runs" }
        p.hint { "The latest " (RUNS) " runs, newest period first." }
        table #runs {
            thead { tr {
                th { "Account" } th { "Period" } th { "Due" } th { "Export" } th { "Status" } th { "Error" }
                th.num { "Retries" } th { "Next attention" }
            } }
            tbody {
                @for run in &runs {
                    tr {
                        td { (run.account_id) }
                        td { (period_text(&run.period)) }
                        td { (layout::timestamp(run.due_at)) }
                        td.mono {
                            @if let Some(export) = run.export_id {
                                a href={ "/dashboard/exports/" (export) } { (export.to_string()[..8]) "…" }
                            } @else { "—" }
                        }
                        td { (run_state(run)) }
                        td { (layout::failure(run.error_code)) }
                        td.num { (run.retries) }
                        td { (layout::or_dash(run.attention_at.map(layout::timestamp))) }
                    }
                }
                @if runs.is_empty() { tr { td colspan="8" { "No period has come due yet." } } }
            }
        }
    };
    Ok(layout::html(layout::page(&admin, "/dashboard/schedules", &title, layout::Refresh::Always, body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frequencies_read_as_words() {
        assert_eq!(frequency_text(&Frequency::parse("daily", None, None).unwrap()), "daily");
        assert_eq!(
            frequency_text(&Frequency::parse("weekly", Some("monday"), None).unwrap()),
            "weekly on monday"
        );
        assert_eq!(
            frequency_text(&Frequency::parse("monthly", None, Some(31)).unwrap()),
            "monthly on day 31"
        );
        assert_eq!(frequency_text(&Frequency::parse("quarterly", None, None).unwrap()), "quarterly on day 1");
    }
}
