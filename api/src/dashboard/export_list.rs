//! `/dashboard/exports`: every export, newest first, filtered by status, account, requesting
//! key (its id or display prefix), table and creation date (UTC days, both inclusive), in pages
//! of [`PAGE`] (`?after=<id>` continues after that export). Each row links to its page.

use maud::html;
use poem::{Request, handler, web::Data};
use shared::{
    api_keys,
    exports::{self, ExportStatus, ListFilter},
    statement::AccountId,
};
use time::Date;

use super::{DashboardError, Page, layout, query_date, query_param, query_text, signed_in};
use crate::AppState;

/// Exports per page.
const PAGE: usize = 100;

/// The filters as the form sent them (what the page shows back and the next page keeps).
#[derive(Default)]
struct Form {
    status: Option<ExportStatus>,
    account: Option<String>,
    key: Option<String>,
    table: Option<String>,
    from: Option<Date>,
    to: Option<Date>,
}

impl Form {
    fn read(state: &AppState, req: &Request) -> Result<Self, DashboardError> {
        let text = |name: &str| query_text(req, name);
        let bad = |message: String| DashboardError::BadRequest(message);
        let status = text("status")
            .map(|s| ExportStatus::parse(&s).ok_or_else(|| bad("Unknown status.".into())))
            .transpose()?;
        let account = text("account")
            .map(|a| {
                AccountId::parse(&a)
                    .map(|a| a.as_str().to_owned())
                    .map_err(|_| bad("Not an account id.".into()))
            })
            .transpose()?;
        let table = text("table")
            .map(|t| state.tables.get(&t).map(|_| t).ok_or_else(|| bad("Not a configured table.".into())))
            .transpose()?;
        let key = text("key").filter(|k| k.len() <= 64);
        Ok(Self { status, account, key, table, from: query_date(req, "from")?, to: query_date(req, "to")? })
    }

    /// The query string of these filters, followed by `extra`.
    fn query(&self, extra: &[(&str, String)]) -> String {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        if let Some(status) = self.status {
            pairs.push(("status", status.as_str().to_owned()));
        }
        for (name, value) in [("account", &self.account), ("key", &self.key), ("table", &self.table)] {
            if let Some(value) = value {
                pairs.push((name, value.clone()));
            }
        }
        for (name, value) in [("from", self.from), ("to", self.to)] {
            if let Some(value) = value {
                pairs.push((name, value.to_string()));
            }
        }
        pairs.extend(extra.iter().cloned());
        serde_urlencoded::to_string(&pairs).unwrap_or_default()
    }
}

#[handler]
pub(crate) async fn page(Data(state): Data<&AppState>, req: &Request) -> Page {
    let admin = signed_in(state, req).await?;
    let form = Form::read(state, req)?;
    let after = query_param(req, "after").and_then(|id| uuid::Uuid::parse_str(&id).ok());
    let db = state.db_for_dashboard().await?;
    // A key named that no key has: nothing can match.
    let requested_by = match &form.key {
        Some(key) => Some(api_keys::resolve(&db, key).await?.unwrap_or_else(uuid::Uuid::nil)),
        None => None,
    };
    let filter = ListFilter {
        status: form.status,
        account_id: form.account.clone(),
        table_name: form.table.clone(),
        created_from: form.from.map(|d| d.midnight().assume_utc()),
        created_before: form.to.and_then(|d| d.next_day()).map(|d| d.midnight().assume_utc()),
        accounts: None,
        requested_by,
        after,
    };
    let mut listed = match exports::list(&db, &filter, PAGE as i64 + 1).await {
        Ok(listed) => listed,
        // A cursor that names no export (pruned since): the first page.
        Err(exports::ListError::UnknownCursor) => {
            exports::list(&db, &ListFilter { after: None, ..filter }, PAGE as i64 + 1).await.map_err(|e| {
                match e {
                    exports::ListError::Db(e) => DashboardError::Db(e),
                    exports::ListError::UnknownCursor => DashboardError::NotFound,
                }
            })?
        }
        Err(exports::ListError::Db(e)) => return Err(e.into()),
    };
    let older = listed.len() > PAGE;
    listed.truncate(PAGE);
    let tables: Vec<&str> = state.tables.names().collect();
    let body = html! {
        form.filters method="get" action="/dashboard/exports" {
            label for="status" { "Status" }
            select #status name="status" {
                option value="" { "any" }
                @for status in ExportStatus::ALL {
                    option value=(status.as_str()) selected[form.status == Some(status)] { (status.as_str()) }
                }
            }
            label for="account" { "Account" }
            input #account type="text" name="account" maxlength="64" value=[form.account.as_deref()];
            label for="key" { "Requested by key" }
            input #key type="text" name="key" maxlength="64" value=[form.key.as_deref()] placeholder="key id or sk_ prefix";
            label for="table" { "Table" }
            select #table name="table" {
                option value="" { "any" }
                @for table in &tables {
                    option value=(table) selected[form.table.as_deref() == Some(*table)] { (table) }
                }
            }
            label for="from" { "Created from" }
            input #from type="date" name="from" value=[form.from.map(|d| d.to_string())];
            label for="to" { "to" }
            input #to type="date" name="to" value=[form.to.map(|d| d.to_string())];
            button type="submit" { "Filter" }
            " " a href="/dashboard/exports" { "Clear" }
        }
        table #exports {
            thead { tr {
                th { "Reference" } th { "Account" } th { "Table" } th { "Period" } th { "Format" } th { "Status" }
                th.num { "Rows" } th.num { "Size" } th { "Created" }
            } }
            tbody {
                @for export in &listed {
                    tr {
                        td { a.mono href={ "/dashboard/exports/" (export.id) } { (export.id) } }
                        td { (export.account_id) }
                        td { (export.table_name) }
                        td { (export.date_from) " – " (export.date_to) }
                        td { (export.format) }
                        td { (layout::status(export.status)) }
                        td.num { (layout::or_dash(export.row_count.map(layout::count))) }
                        td.num { (layout::or_dash(export.file_size.map(layout::bytes))) }
                        td { (layout::timestamp(export.created_at)) }
                    }
                }
                @if listed.is_empty() { tr { td colspan="9" { "No export matches." } } }
            }
        }
        p.pager {
            @if after.is_some() { a href={ "/dashboard/exports?" (form.query(&[])) } { "Newest" } " " }
            @if let (true, Some(last)) = (older, listed.last()) {
                a href={ "/dashboard/exports?" (form.query(&[("after", last.id.to_string())])) } { "Older →" }
            }
        }
    };
    Ok(layout::html(layout::page(
        &admin,
        "/dashboard/exports",
        "Exports",
        layout::Refresh::UnlessEditing,
        body,
    )))
}
