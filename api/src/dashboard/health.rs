//! `/dashboard/health`: whether Postgres, the source database and storage answer, and how fast;
//! the latest storage write check (what `/ready` reports, with its error); the schema and build
//! versions; live workers.

use maud::html;
use poem::{Request, handler, web::Data};
use shared::dashboard::{self, HealthPage};

use super::{Page, layout, signed_in};
use crate::{
    AppState,
    health::{self, WriteCheck},
};

#[handler]
pub(crate) async fn page(Data(state): Data<&AppState>, req: &Request) -> Page {
    let admin = signed_in(state, req).await?;
    let report = health::dependency_checks(state).await;
    let checks = &report.checks;
    let mut db = state.db_for_dashboard().await?;
    let HealthPage { schema_version: schema, live } = dashboard::health(&mut db).await?;
    let body = html! {
        table {
            thead { tr { th { "Dependency" } th { "State" } th.num { "Latency" } } }
            tbody {
                @for check in checks {
                    tr {
                        td { (check.name) }
                        td { @if check.ok { span.ok { "answering" } } @else { span.bad { "not answering" } } }
                        td.num { (format!("{:.1} ms", check.latency_ms)) }
                    }
                }
            }
        }
        h2 { "Storage write check" }
        p.muted {
            "Each worker overwrites " span.mono { (shared::storage::WRITE_CHECK_KEY) }
            " every STORAGE_CHECK_INTERVAL_SECS; the latest outcome decides readiness."
        }
        dl.facts {
            @match &report.storage_write {
                WriteCheck::Recorded(c) => {
                    dt { "State" }
                    dd { @if c.ok { span.ok { "writable" } } @else { span.bad { "write failed" } } }
                    dt { "Checked" }
                    dd { (layout::timestamp(c.checked_at)) " (" (layout::duration(c.age.as_secs_f64())) " ago)" }
                    dt { "Write latency" } dd { (format!("{:.1} ms", c.latency.as_secs_f64() * 1000.0)) }
                    dt { "By worker" } dd.mono { (c.worker_id) }
                    @if let Some(code) = &c.error {
                        @let failure = shared::failure::FailureCode::from_stored(code);
                        dt { "Error" }
                        dd { (failure.message()) " " span.mono { "(" (failure.as_str()) ")" } br; span.muted { "The cause is in the worker log." } }
                    }
                }
                WriteCheck::NotCheckedYet => {
                    dt { "State" } dd.muted { "not checked yet (no worker has run the check)" }
                }
                WriteCheck::Unreadable => {
                    dt { "State" } dd.bad { "unknown (Postgres does not answer)" }
                }
            }
        }
        h2 { "Versions" }
        dl.facts {
            dt { "API build" } dd { (env!("CARGO_PKG_VERSION")) }
            dt { "Database schema" } dd { (schema.map_or("none".into(), |v| format!("V{v}"))) }
            dt { "Schema this build expects" }
            dd { (shared::db::latest_migration_version().map_or("none".into(), |v| format!("V{v}"))) }
            dt { "Storage" } dd { (if state.storage.is_local() { "local disk" } else { "S3" }) }
            dt { "Live workers" }
            dd {
                (live.len())
                @for w in &live { " · " span.mono { (w.id) } " (" (w.version) ")" }
            }
        }
    };
    Ok(layout::html(layout::page(
        &admin,
        "/dashboard/health",
        "System health",
        layout::Refresh::Always,
        body,
    )))
}
