//! `/dashboard/queue`: depth by state, live workers, running, retrying and failed jobs; retry
//! or cancel a job.

use maud::{Markup, html};
use poem::{
    Body, Request, Response, handler,
    web::{Data, Path},
};
use shared::{
    dashboard::{self, JobRow, Retried},
    exports,
    failure::FailureCode,
    queue, workers,
};

use super::{Admin, DashboardError, Page, layout, respond, see_other, signed_form, signed_in};
use crate::AppState;

/// Rows shown per job list.
const LIST_LIMIT: i64 = 50;

#[handler]
pub async fn page(Data(state): Data<&AppState>, req: &Request) -> Response {
    respond(render(state, req).await)
}

async fn render(state: &AppState, req: &Request) -> Page {
    let admin = signed_in(state, req).await?;
    let db = state.db_for_dashboard().await?;
    let depth = queue::depth_by_state(&db).await?;
    let live = workers::live(&db, workers::ALIVE_WITHIN).await?;
    let now = dashboard::now(&db).await?;
    let running = dashboard::jobs_in_state(&db, "running", LIST_LIMIT).await?;
    let waiting = dashboard::jobs_in_state(&db, "retryable", LIST_LIMIT).await?;
    let failed = dashboard::jobs_in_state(&db, "failed", LIST_LIMIT).await?;
    let notice = super::notice_code(req).and_then(notice_text);
    let body = html! {
        @if let Some(text) = notice { p.notice { (text) } }
        div.cards {
            @for state in ["available", "running", "retryable", "failed", "completed", "cancelled"] {
                div.card {
                    div.label { (state) }
                    div.value { (layout::count(depth.iter().find(|(s, _)| s == state).map_or(0, |(_, n)| *n))) }
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

fn job_table(admin: &Admin, jobs: &[JobRow], time_heading: &str) -> Markup {
    html! {
        table {
            thead { tr {
                th.num { "Job" } th { "Kind" } th { "Export" } th.num { "Attempt" } th { "Worker" }
                th { (time_heading) } th { "Last error" } th { "" }
            } }
            tbody {
                @for job in jobs {
                    tr {
                        td.num { (job.id) }
                        td { (job.kind) }
                        td {
                            @if let Some(id) = job.export_id {
                                a.mono href={ "/dashboard/exports/" (id) } { (id) }
                                @if let Some(rows) = job.rows_exported.filter(|_| job.state == "running") {
                                    br; progress title="running" {} " " (layout::count(rows)) " rows"
                                }
                            }
                        }
                        td.num { (job.attempt) " / " (job.max_attempts) }
                        td.mono { (job.worker_id.as_deref().unwrap_or("—")) }
                        td {
                            @match job.seconds {
                                Some(s) if job.state == "failed" => { (layout::duration(s)) " ago" }
                                Some(s) => { (layout::duration(s)) }
                                None => { "—" }
                            }
                        }
                        td.error { (layout::failure(job.last_error.as_deref().map(FailureCode::from_stored))) }
                        td {
                            @if job.state == "failed" || job.state == "retryable" {
                                (layout::action_button(admin, &format!("/dashboard/jobs/{}/retry", job.id), "Retry now", Some("primary")))
                                " "
                            }
                            @if job.state != "failed" {
                                (layout::action_button(admin, &format!("/dashboard/jobs/{}/cancel", job.id), "Cancel", Some("danger")))
                            }
                        }
                    }
                }
                @if jobs.is_empty() { tr { td colspan="8" { "None." } } }
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

/// `POST /dashboard/jobs/{id}/{retry|cancel}`.
#[handler]
pub async fn act(
    Data(state): Data<&AppState>,
    req: &Request,
    Path((id, action)): Path<(String, String)>,
    body: Body,
) -> Response {
    respond(act_on_job(state, req, &id, &action, body).await)
}

async fn act_on_job(state: &AppState, req: &Request, id: &str, action: &str, body: Body) -> Page {
    signed_form(state, req, body).await?;
    let id: i64 = id.parse().map_err(|_| DashboardError::NotFound)?;
    let mut db = state.db_for_dashboard().await?;
    let notice = match action {
        "retry" => match dashboard::retry_job(&mut db, id).await? {
            Retried::Now => "retried",
            Retried::NotRetryable => "not-retryable",
            Retried::Superseded => "superseded",
        },
        "cancel" => match cancel_job(state, &mut db, id).await? {
            true => "cancelled",
            false => "already-finished",
        },
        _ => return Err(DashboardError::NotFound),
    };
    tracing::info!(job.id = id, action, outcome = notice, "dashboard: job action");
    Ok(see_other(&format!("/dashboard/queue?notice={notice}")))
}

/// Cancels through the export when the job produces one (so the export shows CANCELLED too).
/// Returns whether anything was cancelled.
async fn cancel_job(
    state: &AppState,
    db: &mut deadpool_postgres::Object,
    id: i64,
) -> Result<bool, DashboardError> {
    let export_id = dashboard::export_of_job(&*db, id).await?.ok_or(DashboardError::NotFound)?;
    let by_operator = shared::failure::FailureCode::CancelledByOperator;
    let Some(export_id) = export_id else { return Ok(queue::cancel(&*db, id, by_operator).await?) };
    let cancelled = exports::cancel(db, export_id, exports::Canceller::Operator, by_operator).await?;
    let now = matches!(cancelled, exports::Cancelled::Now(_));
    if now {
        state.metrics.exports_finished.add(1, &[opentelemetry::KeyValue::new("status", "cancelled")]);
    }
    Ok(now)
}
