//! `/admin/api-keys`: create a key (its secret shown exactly once, in the answer to the form),
//! list keys by prefix with their state, deactivate, reactivate and delete them. A key revoked
//! with `statement-api keys revoke` is shown as revoked and cannot be reactivated here.

use maud::{Markup, html};
use poem::{Body, Request, handler, web::Data};
use shared::{
    api_keys::{self, Activation, ApiKey, KeySpec, KeyState, NewKey, Role},
    audit::{self, Outcome},
    db::DbError,
    operators::DashboardRole,
};

use super::{Admin, DashboardError, Fields, Page, SignedAction, layout, see_other, signed_form, signed_in};
use crate::AppState;

#[handler]
pub(crate) async fn page(Data(state): Data<&AppState>, req: &Request) -> Page {
    let admin = signed_in(state, req).await?;
    let notice = super::notice_code(req).and_then(notice_text);
    // `?after=<id>`: the page after that key. Anything else there shows the newest keys.
    let after = super::query_param(req, "after").and_then(|id| uuid::Uuid::parse_str(&id).ok());
    let top = notice.map(|n| html! { p.notice { (n) } });
    render(state, &admin, top, layout::Refresh::UnlessEditing, after).await
}

/// Keys shown per page.
const PAGE: usize = 50;

async fn render(
    state: &AppState,
    admin: &Admin,
    top: Option<Markup>,
    refresh: layout::Refresh,
    after: Option<uuid::Uuid>,
) -> Page {
    let db = state.db_for_dashboard().await?;
    let mut keys = api_keys::page(&db, after, PAGE as i64 + 1).await?;
    let older = keys.len() > PAGE;
    keys.truncate(PAGE);
    let body = html! {
        @if let Some(top) = top { (top) }
        h2 { "Keys" }
        table {
            thead { tr {
                th { "Name" } th { "Prefix" } th { "Role" } th { "Accounts" } th { "Created" }
                th { "Last used" } th { "State" } th { "" }
            } }
            tbody {
                @for key in &keys { (key_row(admin, key)) }
                @if keys.is_empty() { tr { td colspan="8" { "No keys yet." } } }
            }
        }
        p.pager {
            @if after.is_some() { a href="/admin/api-keys" { "Newest keys" } " " }
            @if let (true, Some(last)) = (older, keys.last()) {
                a href={ "/admin/api-keys?after=" (last.id) } { "Older keys →" }
            }
        }
        @if admin.may(DashboardRole::Admin) {
        h2 { "Create a key" }
        form method="post" action="/admin/api-keys" {
            (layout::csrf(admin))
            fieldset {
                label for="name" { "Name" }
                input #name type="text" name="name" maxlength="200" required;
                label for="description" { "Description" }
                input #description type="text" name="description" maxlength="1000";
                label for="role" { "Role" }
                select #role name="role" {
                    option value="client" selected { "client — request and download exports" }
                    option value="admin" { "admin — also signs in to this dashboard" }
                }
                label for="accounts" { "Allowed accounts" }
                input #accounts type="text" name="accounts" placeholder="ACC-1001, ACC-1002";
                p.hint { "Comma-separated. A client key needs either its accounts or “All accounts”." }
                label.check for="all_accounts" {
                    input #all_accounts type="checkbox" name="all_accounts" value="yes";
                    " All accounts (the key may export and read every account)"
                }
                p.hint { "Admin keys always have every account." }
                button.primary type="submit" { "Create key" }
            }
        }
        }
    };
    Ok(layout::html(layout::page(admin, "/admin/api-keys", "API keys", refresh, body)))
}

fn key_row(admin: &Admin, key: &ApiKey) -> Markup {
    let state = key.state();
    let action = |what: &str| format!("/admin/api-keys/{}/{what}", key.id);
    html! {
        tr {
            td { strong { (key.name) } @if !key.description.is_empty() { br; span.hint { (key.description) } } }
            td.mono { (key.prefix) "…" }
            td { (key.role.as_str()) }
            td { (key.allowed_accounts.as_ref().map_or("all".into(), |a| a.join(", "))) }
            td { (layout::timestamp(key.created_at)) }
            td { (layout::or_dash(key.last_used_at.map(layout::timestamp))) }
            td {
                @match state {
                    KeyState::Active => span.ok { "active" },
                    KeyState::Deactivated => span.muted { "deactivated" },
                    KeyState::Revoked => span.bad title="Revoked with statement-api keys revoke: final" { "revoked" },
                }
            }
            td.actions {
                @if admin.may(DashboardRole::Admin) {
                @match state {
                    KeyState::Active => {
                        (layout::action_button(admin, &action("deactivate"), "Deactivate", None)) " "
                    }
                    KeyState::Deactivated => {
                        (layout::action_button(admin, &action("reactivate"), "Reactivate", None)) " "
                    }
                    KeyState::Revoked => {}
                }
                form.inline method="post" action=(action("delete")) data-confirm={ "Delete the key " (key.name) " for good?" } {
                    (layout::csrf(admin))
                    button.danger type="submit" { "Delete" }
                }
                }
            }
        }
    }
}

#[handler]
pub(crate) async fn create(Data(state): Data<&AppState>, req: &Request, body: Body) -> Page {
    let (admin, fields) = signed_form(state, req, body).await?;
    admin.require(state, DashboardRole::Admin, "api_key.create", None).await?;
    let form = KeyForm::parse(&fields)?;
    let mut db = state.db_for_dashboard().await?;
    let tx = db.transaction().await.map_err(DbError::from)?;
    let spec = KeySpec {
        name: &form.name,
        description: &form.description,
        role: form.role,
        accounts: &form.accounts,
        all_accounts: form.all_accounts,
    };
    let (key, secret) = api_keys::create(&tx, &spec).await.map_err(|e| match e {
        api_keys::CreateError::Invalid(e) => DashboardError::BadRequest(format!("Not created: {e}.")),
        api_keys::CreateError::Db(e) => e.into(),
    })?;
    let event = admin
        .event("api_key.create", Some(format!("api_key:{}", key.id)), Outcome::Success)
        .with_details(key.created_details());
    audit::record(&tx, &[event]).await?;
    tx.commit().await.map_err(DbError::from)?;
    tracing::info!(api_key.id = %key.id, api_key.prefix = %key.prefix, "dashboard: key created");
    // The answer to the form is the only place the secret ever appears; the page does not
    // refresh itself (that would post the form again) and no cache keeps it.
    render(state, &admin, Some(shown_once(&key, &secret)), layout::Refresh::Never, None).await
}

fn shown_once(key: &ApiKey, secret: &NewKey) -> Markup {
    html! {
        div.notice {
            p { "Key " strong { (key.name) } " created. Copy it now: it is shown this once and cannot be shown again." }
            p { code #new-key .secret { (secret.plaintext) } }
        }
    }
}

/// The create form, validated.
struct KeyForm {
    name: String,
    description: String,
    role: Role,
    accounts: Vec<String>,
    all_accounts: bool,
}

impl KeyForm {
    fn parse(fields: &Fields) -> Result<Self, DashboardError> {
        let bad = |m: &str| DashboardError::BadRequest(m.to_owned());
        let name = fields.get("name").unwrap_or_default().trim().to_owned();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(bad("A key needs a name of 1 to 200 characters."));
        }
        let description = fields.get("description").unwrap_or_default().trim().to_owned();
        if description.chars().count() > 1000 {
            return Err(bad("The description is limited to 1000 characters."));
        }
        let role = Role::parse(fields.get("role").unwrap_or("client"))
            .ok_or_else(|| bad("The role must be client or admin."))?;
        let accounts: Vec<String> = fields
            .get("accounts")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        if let Some(account) = accounts.iter().find(|a| shared::statement::AccountId::parse(a).is_err()) {
            return Err(DashboardError::BadRequest(format!("{account:?} is not a valid account id.")));
        }
        let all_accounts = match fields.get("all_accounts") {
            None => false,
            Some("yes") => true,
            Some(_) => return Err(bad("The “All accounts” choice must be yes or absent.")),
        };
        Ok(Self { name, description, role, accounts, all_accounts })
    }
}

#[handler]
pub(crate) async fn change(Data(state): Data<&AppState>, form: SignedAction<uuid::Uuid>) -> Page {
    let SignedAction { admin, id, action } = form;
    let action = action.as_str();
    let audited = match action {
        "deactivate" => "api_key.deactivate",
        "reactivate" => "api_key.reactivate",
        "delete" => "api_key.delete",
        _ => return Err(DashboardError::NotFound),
    };
    let target = Some(format!("api_key:{id}"));
    admin.require(state, DashboardRole::Admin, audited, target.clone()).await?;
    let mut db = state.db_for_dashboard().await?;
    let tx = db.transaction().await.map_err(DbError::from)?;
    let outcome = match action {
        "deactivate" => api_keys::set_active(&tx, id, false).await?,
        "reactivate" => api_keys::set_active(&tx, id, true).await?,
        _ if api_keys::delete(&tx, id).await? => Activation::Changed,
        _ => Activation::NotFound,
    };
    let recorded = match outcome {
        Activation::Changed => Outcome::Success,
        Activation::Unchanged | Activation::Revoked => Outcome::Unchanged,
        Activation::NotFound => Outcome::NotFound,
    };
    let details = serde_json::json!({ "revoked": outcome == Activation::Revoked });
    audit::record(&tx, &[admin.event(audited, target, recorded).with_details(details)]).await?;
    tx.commit().await.map_err(DbError::from)?;
    // This process applies the change at once; the others within their cache's few seconds.
    state.credentials.forget_keys();
    tracing::info!(api_key.id = %id, action, outcome = ?outcome, "dashboard: key changed");
    let notice = match outcome {
        Activation::Changed => action,
        Activation::Revoked => "revoked",
        Activation::Unchanged | Activation::NotFound => "unchanged",
    };
    Ok(see_other(&format!("/admin/api-keys?notice={notice}")))
}

fn notice_text(code: &str) -> Option<&'static str> {
    Some(match code {
        "deactivate" => "Key deactivated: the API refuses it from now on.",
        "reactivate" => "Key reactivated.",
        "delete" => "Key deleted. Its exports remain, without an owner.",
        "unchanged" => "Nothing changed (the key was already in that state or is gone).",
        "revoked" => "Nothing changed: the key is revoked (statement-api keys revoke), which is final.",
        _ => return None,
    })
}
