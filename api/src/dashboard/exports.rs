//! `/dashboard/exports/{id}`: one export's request, timings, attempts and errors, file, and its
//! newest download links and downloads.

use maud::html;
use poem::{
    Request, handler,
    web::{Data, Path},
};
use shared::{
    dashboard::{self, ExportPage},
    downloads::{Holder as LinkHolder, HolderName, Via},
    exports::{self, ExportStatus},
    failure::FailureCode,
    operators::DashboardRole,
    sessions::Holder,
};

use super::{DashboardError, Page, layout, signed_in};
use crate::AppState;

/// Download links and downloads listed (the newest).
const LISTED: i64 = 50;

#[handler]
pub(crate) async fn page(Data(state): Data<&AppState>, req: &Request, Path(id): Path<String>) -> Page {
    let admin = signed_in(state, req).await?;
    let id = uuid::Uuid::parse_str(&id).map_err(|_| DashboardError::NotFound)?;
    let mut db = state.db_for_dashboard().await?;
    let export = exports::get(&db, id).await?.ok_or(DashboardError::NotFound)?;
    // Never a dead link: a file gone from storage marks the export as having lost it.
    let crate::exports::Checked { export, verified } = crate::exports::check_file(state, &db, export).await?;
    let ExportPage { job, requester, links, downloads } = dashboard::export(&mut db, &export, LISTED).await?;
    let link = match (&export.file_key, export.status) {
        // A viewer reads about exports; only an operator or an admin gets their files.
        (Some(key), ExportStatus::Completed) if verified && admin.may(DashboardRole::Operator) => {
            let holder = match &admin.session.holder {
                Holder::Person { operator_id, .. } => LinkHolder::Operator(*operator_id),
                Holder::Key { api_key_id, .. } => LinkHolder::Key(*api_key_id),
            };
            state.download_link(export.id, key, Via::Dashboard, holder).await.map(|(url, _)| url).ok()
        }
        _ => None,
    };
    let seconds = |from: Option<time::OffsetDateTime>, to: Option<time::OffsetDateTime>| {
        from.zip(to).map(|(a, b)| (b - a).as_seconds_f64())
    };
    let running = export.status.is_outstanding();
    let body = html! {
        h2 { "Request" }
        dl.facts {
            dt { "Reference" } dd.mono { (export.id) }
            dt { "Status" } dd { (layout::status(export.status)) }
            dt { "Account" } dd { (export.account_id) }
            dt { "Table" } dd { (export.table_name) }
            dt { "Period" } dd { (export.date_from) " – " (export.date_to) }
            dt { "Format" } dd { (export.format) }
            dt { "Time zone" } dd { (export.time_zone) }
            @if let Some(number) = export.statement_number {
                dt { "Statement number" } dd { (number) }
            }
            @if let Some(balances) = export.statement.as_ref().and_then(|s| s.balances) {
                dt { "Balances" } dd { (balances.as_str()) }
            }
            @if let Some(detail) = export.error_detail.as_deref().filter(|_| export.failure.is_some()) {
                dt { "Failure detail" } dd { (detail) }
            }
            dt { "Requested by" } dd { (requester.as_deref().unwrap_or("—")) }
        }
        h2 { "Timings" }
        dl.facts {
            dt { "Created" } dd { (layout::timestamp(export.created_at)) }
            dt { "Source snapshot" } dd { (layout::or_dash(export.snapshot_at.map(layout::timestamp))) }
            dt { "Replica lag at snapshot" } dd { (layout::or_dash(export.snapshot_lag_seconds.map(|s| format!("{s} s")))) }
            dt { "Replication position" } dd.mono { (export.snapshot_position.as_deref().unwrap_or("—")) }
            dt { "Started" } dd { (layout::or_dash(export.started_at.map(layout::timestamp))) }
            dt { "Finished" } dd { (layout::or_dash(export.completed_at.map(layout::timestamp))) }
            dt { "Waited in queue" } dd { (layout::or_dash(seconds(Some(export.created_at), export.started_at).map(layout::duration))) }
            dt { "Processing time" } dd { (layout::or_dash(seconds(export.started_at, export.completed_at).map(layout::duration))) }
            dt { "File kept until" } dd { (layout::or_dash(export.expires_at.map(layout::timestamp))) }
        }
        h2 { "Attempts" }
        dl.facts {
            @if let Some(job) = &job {
                dt { "Job" } dd { (job.id) " (" (job.kind) ", " (job.state) ")" }
                dt { "Attempts" } dd { (job.attempt) " of " (job.max_attempts) }
                dt { "Worker" } dd.mono { (job.worker_id.as_deref().unwrap_or("—")) }
                dt { "Last attempt's error" } (error_or_none(job.last_error.as_deref().map(FailureCode::from_stored), export.id))
            }
            dt { "Export error" } (error_or_none(export.failure, export.id))
            dt { "Rows so far" } dd { @if running { progress title="running" {} " " } (layout::count(export.rows_exported)) }
        }
        @if let Some(job) = job.as_ref().filter(|_| running && admin.may(DashboardRole::Operator)) {
            p { (layout::action_button(&admin, &format!("/dashboard/jobs/{}/cancel", job.id), "Cancel this export", Some("danger"))) }
        }
        h2 { "File" }
        dl.facts {
            dt { "Rows" } dd { (layout::or_dash(export.row_count.map(layout::count))) }
            dt { "Size" } dd { (layout::or_dash(export.file_size.map(layout::bytes))) }
            dt { "SHA-256" } dd.mono { (export.sha256.as_deref().unwrap_or("—")) }
            dt { "Download" }
            dd {
                @if let Some(url) = &link {
                    a href=(url) rel="noreferrer" { "Download (link valid " (layout::duration(state.download_url_ttl.as_secs_f64())) ")" }
                } @else if let Some(at) = export.file_lost_at {
                    span.error { "The file disappeared from storage (found missing " (layout::timestamp(at)) ")" }
                } @else if !verified {
                    span.error { "Storage did not answer; no link" }
                } @else { "—" }
            }
        }
        h2 { "Download links" }
        p.hint {
            (layout::count(export.download_links_issued)) " issued, " (layout::count(export.downloads))
            " downloads that sent file bytes (counted about a second behind; downloads from S3 are not seen). Newest "
            (LISTED) ":"
        }
        table {
            thead { tr { th { "Issued" } th { "To" } th { "Via" } th { "Expires" } th { "Storage" } th { "Link" } } }
            tbody {
                @for link in &links {
                    tr {
                        td { (layout::timestamp(link.issued_at)) }
                        td { (holder_name(&link.holder)) }
                        td { (link.via) }
                        td { (layout::timestamp(link.expires_at)) }
                        td { (link.backend) }
                        td.mono { (link.id) }
                    }
                }
                @if links.is_empty() { tr { td colspan="6" { "No links issued yet." } } }
            }
        }
        h2 { "Downloads" }
        table {
            thead { tr {
                th { "When" } th.num { "Status" } th { "Range" } th.num { "Bytes sent" } th { "Client" }
                th { "Link issued to" } th { "Link" }
            } }
            tbody {
                @for download in &downloads {
                    tr {
                        td { (layout::timestamp(download.started_at)) }
                        td.num { (download.status) }
                        td.mono { (layout::or_dash(download.range.map(|(first, last)| format!("{first}-{last}")))) }
                        td.num { (layout::count(download.bytes_sent)) }
                        td.mono { (download.client_addr) }
                        td { (layout::or_dash(download.holder.as_ref().map(holder_name))) }
                        td.mono { (layout::or_dash(download.link_id.map(|id| id.to_string()))) }
                    }
                }
                @if downloads.is_empty() { tr { td colspan="7" { "No downloads through the file endpoint yet." } } }
            }
        }
    };
    let title = format!("Export {}", export.id);
    let refresh = if running { layout::Refresh::Always } else { layout::Refresh::Never };
    Ok(layout::html(layout::page(&admin, "", &title, refresh, body)))
}

/// Who a link was issued to: a key by its name and prefix, a person by name.
fn holder_name(holder: &HolderName) -> String {
    match holder {
        HolderName::Key(_, Some((name, prefix))) => {
            format!("key {}", shared::sessions::key_label(name, prefix))
        }
        HolderName::Key(id, None) => format!("deleted key {id}"),
        HolderName::Operator(_, Some(name)) => name.clone(),
        HolderName::Operator(id, None) => format!("removed operator {id}"),
    }
}

/// A failure's code and message, and where its cause is: the worker's log, on the lines of
/// this export's job (field `export.id`).
fn error_or_none(failure: Option<FailureCode>, export_id: uuid::Uuid) -> maud::Markup {
    html! {
        @match failure {
            Some(code) => dd.error {
                (layout::failure(Some(code)))
                br;
                small.muted { "Details are in the worker log, on the lines with export.id=" (export_id) }
            },
            None => dd.muted { "none" },
        }
    }
}
