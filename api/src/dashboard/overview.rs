//! `/dashboard`: export analytics over the last 30 days.

use maud::html;
use poem::{Request, handler, web::Data};
use shared::{
    dashboard::{self, OverviewPage},
    exports::ExportStatus,
};

use super::{Page, charts, layout, signed_in};
use crate::AppState;

/// Exports listed as recent.
const RECENT: i64 = 20;

#[handler]
pub(crate) async fn page(Data(state): Data<&AppState>, req: &Request) -> Page {
    let admin = signed_in(state, req).await?;
    let mut db = state.db_for_dashboard().await?;
    let OverviewPage { stats, hourly, daily, recent } = dashboard::overview(&mut db, RECENT).await?;
    let hourly: Vec<(String, i64)> = hourly.into_iter().map(|(at, n)| (layout::hour_label(at), n)).collect();
    let daily: Vec<(String, i64)> = daily.into_iter().map(|(at, n)| (layout::day_label(at), n)).collect();
    let cards = [
        ("Exports (30 days)", layout::count(stats.created())),
        ("Success rate", layout::percent(stats.success_rate())),
        ("Average time", layout::or_dash(stats.avg_seconds.map(layout::duration))),
        ("p95 time", layout::or_dash(stats.p95_seconds.map(layout::duration))),
        ("Rows / s", layout::or_dash(stats.rows_per_s.map(|r| layout::count(r as i64)))),
        ("Reuse (dedup) rate", layout::percent(stats.reuse_rate())),
        ("Running", layout::count(stats.count(ExportStatus::Processing))),
        ("Pending", layout::count(stats.count(ExportStatus::Pending))),
        ("Completed", layout::count(stats.count(ExportStatus::Completed))),
        ("Failed", layout::count(stats.count(ExportStatus::Failed))),
        ("Cancelled", layout::count(stats.count(ExportStatus::Cancelled))),
        ("Expired", layout::count(stats.count(ExportStatus::Expired))),
    ];
    let body = html! {
        div.cards {
            @for (label, value) in &cards {
                div.card { div.label { (label) } div.value { (value) } }
            }
        }
        p.hint { "Requests answered from an existing export: " (layout::count(stats.reused)) "." }
        h2 { "Exports per hour (last 24 hours, UTC)" }
        (charts::bars("Exports per hour", &hourly, 3))
        h2 { "Exports per day (last 30 days)" }
        (charts::bars("Exports per day", &daily, 5))
        h2 { "Recent exports" }
        p { a href="/dashboard/exports" { "All exports, filtered and paged →" } }
        table {
            thead { tr {
                th { "Reference" } th { "Account" } th { "Period" } th { "Status" }
                th.num { "Rows" } th.num { "Size" } th { "Created" }
            } }
            tbody {
                @for export in &recent {
                    tr {
                        td { a.mono href={ "/dashboard/exports/" (export.id) } { (export.id) } }
                        td { (export.account_id) }
                        td { (export.date_from) " – " (export.date_to) }
                        td { (layout::status(export.status)) }
                        td.num {
                            @if export.status == ExportStatus::Processing {
                                // The total is unknown until the export ends: an indeterminate
                                // bar with the rows written so far.
                                progress title="running" {} " " (layout::count(export.rows_exported))
                            } @else {
                                (layout::or_dash(export.row_count.map(layout::count)))
                            }
                        }
                        td.num { (layout::or_dash(export.file_size.map(layout::bytes))) }
                        td { (layout::timestamp(export.created_at)) }
                    }
                }
                @if recent.is_empty() { tr { td colspan="7" { "No exports yet." } } }
            }
        }
    };
    Ok(layout::html(layout::page(&admin, "/dashboard", "Overview", layout::Refresh::Always, body)))
}
