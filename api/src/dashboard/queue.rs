//! `/dashboard/queue`: depth by state, live workers, running, retrying and failed jobs; retry
//! or cancel a job.

use maud::{Markup, html};
use poem::{Request, handler, web::Data};
use shared::{
    audit::{self, Outcome},
    dashboard::{self, JobCancelled, JobRow, QueuePage, Retried},
    db::DbError,
    failure::FailureCode,
    operators::DashboardRole,
    queue::JobState,
};

use super::{Admin, DashboardError, Page, SignedAction, layout, see_other, signed_in};
use crate::AppState;

/// Rows shown per job list.
const LIST_LIMIT: i64 = 50;

/// The order of the depth cards.
const CARDS: [JobState; 6] = [
    JobState::Available,
    JobState::Running,
    JobState::Retryable,
    JobState::Failed,
    JobState::Completed,
    JobState::Cancelled,
];

#[handler]
pub(crate) async fn page(Data(state): Data<&AppState>, req: &Request) -> Page {
    let admin = signed_in(state, req).await?;
    let mut db = state.db_for_dashboard().await?;
    let QueuePage { depth, live, now, running, waiting, failed } =
        dashboard::queue(&mut db, LIST_LIMIT).await?;
    let notice = super::notice_code(req).and_then(notice_text);
    let body = html! {
        @if let Some(text) = notice { p.notice { (text) } }
        div.cards {
            @for state in CARDS {
                div.card {
                    div.label { (state) }
                    div.value { (layout::count(depth.iter().find(|(s, _)| *s == state).map_or(0, |(_, n)| *n))) }
                }
            }
        }
        h2 { "Live workers (" (live.len()) ")" }
        table {
            thead { tr {
                th { "Worker" } th { "Host" } th.num { "PID" } th { "Version" } th.num { "Running jobs" }
                th { "Started" } th { "Last heartbeat" }
            } }
            tbody {
                @for w in &live {
                    tr {
                        td.mono { (w.id) @if w.is_leader { " (maintenance leader)" } }
                        td { (w.host) } td.num { (w.pid) } td { (w.version) } td.num { (w.running_jobs) }
                        td { (layout::timestamp(w.started_at)) }
                        td { (layout::duration((now - w.last_heartbeat_at).as_seconds_f64())) " ago" }
                    }
                }
                @if live.is_empty() { tr { td colspan="7" { "No worker has sent a heartbeat in the last minute." } } }
            }
        }
        h2 { "Running (" (running.len()) ")" }
        (job_table(&admin, &running, "Running for"))
        h2 { "Waiting to retry (" (waiting.len()) ")" }
        (job_table(&admin, &waiting, "Retries in"))
        h2 { "Failed (" (failed.len()) ")" }
        (job_table(&admin, &failed, "Failed"))
    };
    Ok(layout::html(layout::page(
        &admin,
        "/dashboard/queue",
        "Queue & workers",
        layout::Refresh::Always,
        body,
    )))
}

fn job_table(admin: &Admin, rows: &[JobRow], time_heading: &str) -> Markup {
    html! {
        table {
            thead { tr {
                th.num { "Job" } th { "Kind" } th { "Export" } th.num { "Attempt" } th { "Worker" }
                th { (time_heading) } th { "Last error" } th { "" }
            } }
            tbody {
                @for JobRow { job, export } in rows {
                    tr {
                        td.num { (job.id) }
                        td { (job.kind) }
                        td {
                            @if let Some(export) = export {
                                a.mono href={ "/dashboard/exports/" (export.id) } { (export.id) }
                                @if job.state == JobState::Running {
                                    br; progress title="running" {} " " (layout::count(export.rows_exported)) " rows"
                                }
                            }
                        }
                        td.num { (job.attempt) " / " (job.max_attempts) }
                        td.mono { (job.worker_id.as_deref().unwrap_or("—")) }
                        td {
                            @match job.seconds {
                                Some(s) if job.state == JobState::Failed => { (layout::duration(s)) " ago" }
                                Some(s) => { (layout::duration(s)) }
                                None => { "—" }
                            }
                        }
                        td.error { (layout::failure(job.last_error.as_deref().map(FailureCode::from_stored))) }
                        td {
                            @if admin.may(DashboardRole::Operator) && matches!(job.state, JobState::Failed | JobState::Retryable) {
                                (layout::action_button(admin, &format!("/dashboard/jobs/{}/retry", job.id), "Retry now", Some("primary")))
                                " "
                            }
                            @if admin.may(DashboardRole::Operator) && job.state != JobState::Failed {
                                (layout::action_button(admin, &format!("/dashboard/jobs/{}/cancel", job.id), "Cancel", Some("danger")))
                            }
                        }
                    }
                }
                @if rows.is_empty() { tr { td colspan="8" { "None." } } }
            }
        }
    }
}

/// Outcome messages shown after an action (by code, so no user text travels in the URL).
fn notice_text(code: &str) -> Option<&'static str> {
    Some(match code {
        "retried" => "The job is queued again and runs at once.",
        "not-retryable" => "Only failed jobs and jobs waiting for a retry can be retried.",
        "superseded" => "An identical export is live now; this one cannot be revived.",
        "cancelled" => "The job is cancelled; a running attempt stops at its next heartbeat.",
        "already-finished" => "The job had already finished.",
        _ => return None,
    })
}

/// `POST /dashboard/jobs/{id}/{retry|cancel}`: an operator's, recorded with its outcome in the
/// transaction that performs it.
#[handler]
pub(crate) async fn act(Data(state): Data<&AppState>, form: SignedAction<i64>) -> Page {
    let SignedAction { admin, id, action } = form;
    let audited = match action.as_str() {
        "retry" => "job.retry",
        "cancel" => "job.cancel",
        _ => return Err(DashboardError::NotFound),
    };
    let target = Some(format!("job:{id}"));
    admin.require(state, DashboardRole::Operator, audited, target.clone()).await?;
    let mut db = state.db_for_dashboard().await?;
    let mut tx = db.transaction().await.map_err(DbError::from)?;
    let (notice, outcome) = match audited {
        "job.retry" => match dashboard::retry_job(&mut tx, id).await? {
            Retried::Now => ("retried", Outcome::Success),
            Retried::NotRetryable => ("not-retryable", Outcome::Unchanged),
            Retried::Superseded => ("superseded", Outcome::Unchanged),
        },
        _ => match dashboard::cancel_job(&mut tx, id, &state.metrics).await? {
            JobCancelled::Now => ("cancelled", Outcome::Success),
            JobCancelled::AlreadyFinished => ("already-finished", Outcome::Unchanged),
            JobCancelled::NotFound => ("not-found", Outcome::NotFound),
        },
    };
    let event = admin.event(audited, target, outcome).with_details(serde_json::json!({ "result": notice }));
    audit::record(&tx, &[event]).await?;
    tx.commit().await.map_err(DbError::from)?;
    if outcome == Outcome::NotFound {
        return Err(DashboardError::NotFound);
    }
    tracing::info!(job.id = id, action, outcome = notice, "dashboard: job action");
    Ok(see_other(&format!("/dashboard/queue?notice={notice}")))
}
