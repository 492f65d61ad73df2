//! The page shell, embedded assets and value formatting shared by the dashboard pages. maud
//! escapes every interpolated value, so user data (key names, errors) is rendered inert.

use maud::{DOCTYPE, Markup, html};
use poem::{
    Response, handler,
    http::{StatusCode, header},
    web::Path,
};
use time::{
    OffsetDateTime, PrimitiveDateTime, format_description::BorrowedFormatItem, macros::format_description,
};

use shared::{exports::ExportStatus, failure::FailureCode};

use super::Admin;

const CSS: &str = include_str!("assets/dashboard.css");
const JS: &str = include_str!("assets/dashboard.js");
const ICON: &str = include_str!("assets/favicon.svg");

/// The embedded assets: file name, content, content type.
const ASSETS: [(&str, &str, &str); 3] = [
    ("dashboard.css", CSS, "text/css; charset=utf-8"),
    ("dashboard.js", JS, "text/javascript; charset=utf-8"),
    ("favicon.svg", ICON, "image/svg+xml"),
];

/// `GET /dashboard/assets/{name}`: an embedded asset (an unknown name is the API's 404).
#[handler]
pub(crate) fn asset(Path(name): Path<String>) -> poem::Result<Response> {
    let (_, body, content_type) = ASSETS
        .iter()
        .find(|(file, ..)| *file == name)
        .ok_or_else(|| poem::Error::from_status(StatusCode::NOT_FOUND))?;
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, *content_type)
        .header(header::CACHE_CONTROL, "public, max-age=3600")
        .body(*body))
}

/// A rendered page as a response that no cache keeps (pages show live data and secrets once).
pub(crate) fn html(page: Markup) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .body(page.into_string())
}

/// How a page refreshes itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refresh {
    /// Every 30 s, also without JavaScript (the page has no text fields to lose).
    Always,
    /// Every 30 s unless a form is being filled in (needs JavaScript).
    UnlessEditing,
    /// Never (the page answers a form post: reloading it would post again). The script still
    /// loads for its other duties (confirmations).
    Never,
}

/// The signed-in page shell: navigation, the operator's name and a sign-out button.
pub(crate) fn page(admin: &Admin, active: &str, title: &str, refresh: Refresh, body: Markup) -> Markup {
    let nav = [
        ("/dashboard", "Overview"),
        ("/dashboard/exports", "Exports"),
        ("/dashboard/queue", "Queue & workers"),
        ("/dashboard/health", "System health"),
        ("/dashboard/webhooks", "Webhooks"),
        ("/dashboard/schedules", "Schedules"),
        ("/admin/api-keys", "API keys"),
        ("/dashboard/audit", "Audit"),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                (head_common(title))
                script src="/dashboard/assets/dashboard.js" defer {}
                @if refresh == Refresh::Always {
                    noscript { meta http-equiv="refresh" content="30"; }
                }
            }
            body data-refresh=(if refresh == Refresh::Never { "off" } else { "on" }) {
                header {
                    span.brand { "Statement exports" }
                    nav {
                        @for (href, label) in nav {
                            a href=(href) class=[(href == active).then_some("active")] { (label) }
                        }
                    }
                    div.who {
                        span {
                            "Signed in as " strong #who { (admin.session.display_name()) }
                            " " span.muted #session-role { (admin.session.role.as_str()) }
                            @if matches!(admin.session.holder, shared::sessions::Holder::Key { .. }) {
                                " " span.bad title="Signed in with an admin API key: recorded as break-glass use" { "break-glass" }
                            }
                        }
                        form.inline method="post" action="/dashboard/sign-out" {
                            (csrf(admin))
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// A page outside the signed-in shell (sign-in, errors).
pub(crate) fn bare(title: &str, message: &str) -> Markup {
    bare_with(title, html! { p { (message) } p { a href="/dashboard" { "Back to the dashboard" } } })
}

pub(crate) fn bare_with(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { (head_common(title)) }
            body { main.signin { h1 { (title) } (body) } }
        }
    }
}

/// What every page's `<head>` holds: charset, viewport, title, stylesheet and icon.
fn head_common(title: &str) -> Markup {
    html! {
        meta charset="utf-8";
        meta name="viewport" content="width=device-width, initial-scale=1";
        title { (title) " · Statement exports" }
        link rel="stylesheet" href="/dashboard/assets/dashboard.css";
        link rel="icon" href="/dashboard/assets/favicon.svg" type="image/svg+xml";
    }
}

/// The hidden CSRF field every form carries.
pub(crate) fn csrf(admin: &Admin) -> Markup {
    html! { input type="hidden" name="csrf" value=(admin.session.csrf_token); }
}

/// A one-button form posting to `action`.
pub(crate) fn action_button(admin: &Admin, action: &str, label: &str, class: Option<&str>) -> Markup {
    html! {
        form.inline method="post" action=(action) {
            (csrf(admin))
            button type="submit" class=[class] { (label) }
        }
    }
}

const TIMESTAMP: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");

pub(crate) fn timestamp(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC).format(TIMESTAMP).unwrap_or_else(|_| at.to_string())
}

/// The value, or `—` when there is none.
pub(crate) fn or_dash(value: Option<String>) -> String {
    value.unwrap_or_else(|| "—".into())
}

pub(crate) fn hour_label(at: PrimitiveDateTime) -> String {
    format!("{:02}:00", at.hour())
}

pub(crate) fn day_label(at: PrimitiveDateTime) -> String {
    format!("{:02}-{:02}", u8::from(at.month()), at.day())
}

/// `0.42 s`, `12.3 s`, `4 min 05 s`, `2 h 10 min`.
pub(crate) fn duration(seconds: f64) -> String {
    let seconds = seconds.max(0.0);
    if seconds < 60.0 {
        format!("{seconds:.prec$} s", prec = if seconds < 10.0 { 2 } else { 1 })
    } else if seconds < 3600.0 {
        format!("{} min {:02} s", (seconds / 60.0) as u64, (seconds % 60.0) as u64)
    } else {
        format!("{} h {:02} min", (seconds / 3600.0) as u64, ((seconds % 3600.0) / 60.0) as u64)
    }
}

/// `812 B`, `4.2 KB`, `1.5 MB` (decimal units).
pub(crate) fn bytes(n: i64) -> String {
    let n = n as f64;
    match n {
        n if n < 1e3 => format!("{n:.0} B"),
        n if n < 1e6 => format!("{:.1} KB", n / 1e3),
        n if n < 1e9 => format!("{:.1} MB", n / 1e6),
        n => format!("{:.2} GB", n / 1e9),
    }
}

/// `1,234,567`.
pub(crate) fn count(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub(crate) fn percent(rate: Option<f64>) -> String {
    or_dash(rate.map(|r| format!("{:.1} %", r * 100.0)))
}

/// An export's status word with its colour class.
pub(crate) fn status(status: ExportStatus) -> Markup {
    let word = status.as_str();
    html! { span class={ "status " (word) } { (word) } }
}

/// A recorded failure: its code and fixed message (never the cause, which is in the worker's
/// log). Empty when there is none.
pub(crate) fn failure(code: Option<FailureCode>) -> Markup {
    html! {
        @if let Some(code) = code {
            code.mono { (code.as_str()) } " " (code.message())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_like_numbers() {
        assert_eq!(count(0), "0");
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(count(-1000), "-1,000");
        assert_eq!(bytes(812), "812 B");
        assert_eq!(bytes(1_500_000), "1.5 MB");
        assert_eq!(duration(0.421), "0.42 s");
        assert_eq!(duration(245.0), "4 min 05 s");
        assert_eq!(duration(7800.0), "2 h 10 min");
        assert_eq!(percent(Some(0.9876)), "98.8 %");
        assert_eq!(percent(None), "—");
    }

    #[test]
    fn interpolated_text_is_escaped() {
        let markup = bare("t", "<script>alert(1)</script>").into_string();
        assert!(markup.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{markup}");
        assert!(!markup.contains("<script>alert"));
    }
}
