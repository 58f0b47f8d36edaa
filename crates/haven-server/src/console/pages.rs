//! The console's pages and actions.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use haven_proto::{Attempt, UsageResponse};
use haven_store::meta::CategoryRow;
use maud::{Markup, html};
use serde::Deserialize;

use super::{
    WebUser, check_csrf, confirm_password, destroying_user, page, problem, problem_from, size,
    web_user,
};
use crate::api::rfc3339;
use crate::state::SharedState;
use haven_proto::units::path_escape;

macro_rules! signed_in {
    ($state:expr, $headers:expr) => {
        match web_user(&$state, &$headers).await {
            Ok(u) => u,
            Err(r) => return r,
        }
    };
}

macro_rules! or_problem {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return problem_from(e.into()),
        }
    };
}

const DAY: i64 = 86_400;

#[derive(Deserialize)]
pub struct Next {
    next: Option<String>,
}

/// `GET /signin[?next=PATH]`: with `next`, the password is asked again
/// before an action that deletes or weakens backups, and the page goes
/// back there once it is proved.
pub async fn signin_page(Query(q): Query<Next>) -> Markup {
    let again = q.next.is_some();
    let body = html! {
        div.signin.card {
            @if again {
                h1 { "Confirm your password" }
                p { "Deleting backups, signing devices out, switching categories off and moving to a smaller plan need your password again when you signed in more than a few minutes ago." }
            } @else {
                h1 { "Sign in to Haven" }
            }
            // No `name` on the password field and no form action: even
            // without JavaScript the password is never submitted.
            form #signin {
                label for="email" { "Email" }
                input #email type="email" autocomplete="username" required;
                label for="password" { "Password" }
                input #password type="password" autocomplete="current-password" required;
                p { button type="submit" { "Sign in" } }
                p #signin-status role="status" aria-live="polite" {}
            }
            p.muted {
                "Your password never leaves this page: it derives a key here, as the Haven app does. "
                "On a signed-in device, " code { "haven console" } " prints a one-time sign-in link."
            }
            noscript { p.error { "Signing in needs JavaScript: the page derives your key from the password itself." } }
        }
        script src="/static/kdf.js" {}
        script src="/static/signin.js" {}
    };
    page("Sign in", None, "/signin", body)
}

fn total_categories(u: &UsageResponse) -> Vec<(String, u64)> {
    let mut by: BTreeMap<String, u64> = BTreeMap::new();
    for c in &u.categories {
        *by.entry(c.category.clone()).or_default() += c.bytes;
    }
    let mut v: Vec<_> = by.into_iter().collect();
    v.sort_by_key(|(_, b)| std::cmp::Reverse(*b));
    v
}

/// A bar of `used` split by shares, on a scale of `scale` bytes.
fn bar(label: &str, parts: &[(String, u64)], used: u64, scale: u64) -> Markup {
    let total: u64 = parts.iter().map(|(_, b)| *b).sum::<u64>().max(1);
    let scale = scale.max(1) as f64;
    html! {
        div.bar role="img" aria-label=(label) {
            @for (i, (name, b)) in parts.iter().enumerate() {
                @let w = (used as f64 * (*b as f64 / total as f64)) / scale * 100.0;
                span class=(format!("c{}", i % 8)) style=(format!("width: {w:.2}%")) title=(name) {}
            }
        }
        ul.legend {
            @for (i, (name, b)) in parts.iter().enumerate() {
                li { i class=(format!("c{}", i % 8)) {} (name) " " span.muted { (size(*b)) } }
            }
        }
    }
}

/// `GET /`: the storage overview.
pub async fn overview(State(state): State<SharedState>, headers: HeaderMap) -> Response {
    let user = signed_in!(state, headers);
    let u = or_problem!(crate::api::storage::usage_of(&state, user.account.id).await);
    let plans = &state.config.plans;
    let scale = u.quota.unwrap_or(u.used);
    let devices: Vec<(String, u64)> = u
        .devices
        .iter()
        .map(|d| (d.device.clone(), d.bytes))
        .collect();
    let body = html! {
        h1 { "Storage" }
        section.card aria-labelledby="usage-h" {
            h2 #usage-h { "Your storage" }
            dl.figures #usage data-used=(u.used) data-quota=[u.quota] data-free=[u.free] {
                div { dt { "Plan" } dd { (u.plan.clone().unwrap_or_else(|| "no plan".into())) } }
                div { dt { "Used" } dd { (size(u.used)) } }
                div { dt { "Quota" } dd { (u.quota.map(size).unwrap_or_else(|| "unlimited".into())) } }
                div { dt { "Free" } dd { (u.free.map(size).unwrap_or_else(|| "—".into())) } }
            }
            h3.muted { "By category" }
            (bar("Storage used by category", &total_categories(&u), u.used, scale))
            h3.muted { "By device" }
            (bar("Storage used by device", &devices, u.used, scale))
            p.muted { "Category sizes are what each device's newest backup holds, before deduplication and compression." }
            @for w in &u.expiring {
                p.warn { "The backups of " strong { (w.device) } " expire on " (w.expires) ": it has not backed up since " (w.last_backup) "." }
            }
        }
        @if plans.iter().any(|p| p.selectable) {
            section.card aria-labelledby="plan-h" {
                h2 #plan-h { "Change plan" }
                form method="post" action="/plan" {
                    input type="hidden" name="csrf" value=(user.csrf);
                    label for="plan" { "Plan" }
                    select #plan name="plan" {
                        @for p in plans.iter().filter(|p| p.selectable) {
                            option value=(p.name) selected[u.plan.as_deref() == Some(p.name.as_str())] {
                                (p.name) " — " (size(p.quota_bytes))
                            }
                        }
                    }
                    p { button type="submit" { "Change plan" } }
                }
            }
        }
    };
    page("Storage", Some(&user), "/", body).into_response()
}

#[derive(Deserialize)]
pub struct PlanForm {
    csrf: String,
    plan: String,
}

/// `POST /plan`.
pub async fn change_plan(
    State(state): State<SharedState>,
    headers: HeaderMap,
    axum::Form(f): axum::Form<PlanForm>,
) -> Response {
    let user = signed_in!(state, headers);
    if let Err(r) = check_csrf(&user, &headers, Some(&f.csrf)) {
        return r;
    }
    let Some(plan) = state
        .config
        .plans
        .iter()
        .find(|p| p.name == f.plan && p.selectable)
    else {
        return problem(
            StatusCode::BAD_REQUEST,
            "There is no such plan to choose.",
            "Pick one of the plans listed.",
        );
    };
    let current = or_problem!(crate::api::quota(&state, user.account.id).await);
    if current.is_some_and(|q| plan.quota_bytes < q) && !user.password_is_recent(&state) {
        return confirm_password(&headers, "/");
    }
    let used = or_problem!(state.meta.usage(user.account.id).await).used;
    if used > plan.quota_bytes {
        return problem(
            StatusCode::BAD_REQUEST,
            &format!(
                "Your backups use {}, more than the {} of the plan {}.",
                size(used),
                size(plan.quota_bytes),
                plan.name
            ),
            "Delete backups you no longer need first, or choose a bigger plan.",
        );
    }
    or_problem!(
        state
            .meta
            .account_set_plan(user.account.id, Some(&plan.name))
            .await
    );
    or_problem!(crate::journal::account(&state, user.account.id).await);
    tracing::info!(account_id = user.account.id, plan = %plan.name, "plan changed in the console");
    Redirect::to("/").into_response()
}

fn last<'a>(attempts: &'a [Attempt], results: &[&str]) -> Option<&'a Attempt> {
    attempts
        .iter()
        .find(|a| results.contains(&a.result.as_str()))
}

/// `GET /devices`.
pub async fn devices(State(state): State<SharedState>, headers: HeaderMap) -> Response {
    let user = signed_in!(state, headers);
    let devs = or_problem!(state.meta.devices(user.account.id).await);
    let now = state.now();
    let mut rows = Vec::new();
    for d in &devs {
        let attempts: Vec<Attempt> =
            or_problem!(state.meta.attempts(user.account.id, Some(d.id), 50).await)
                .into_iter()
                .map(crate::api::storage::attempt)
                .collect();
        rows.push((d, attempts));
    }
    let body = html! {
        h1 { "Devices" }
        @if devs.is_empty() {
            p.card { "No device has signed in yet. Install Haven on a device and run " code { "haven signup" } " or " code { "haven login" } "." }
        }
        div.card {
            table {
                thead { tr { th { "Device" } th { "Last backup" } th { "Status" } th.wide { "Next backup" } } }
                tbody {
                    @for (d, attempts) in &rows {
                        @let ok = last(attempts, &["ok", "partial"]);
                        @let failure = last(attempts, &["failed", "partial"]).filter(|f| ok.is_none_or(|o| f.finished >= o.finished));
                        tr {
                            td {
                                a href=(format!("/devices/{}", path_escape(&d.name))) { (d.name) }
                                @if !d.signed_in { div.muted { "signed out" } }
                                @if let Some(seen) = d.last_seen { div.muted { "seen " (rfc3339(seen)) } }
                            }
                            td {
                                (d.last_backup.map(rfc3339).unwrap_or_else(|| "never".into()))
                                @if d.last_backup.is_none_or(|t| now - t > 3 * DAY) {
                                    div.warn { "Not backed up for more than 3 days." }
                                }
                                @if let Some(t) = d.last_backup.filter(|t| state.config.expire_days > 0 && now - t > (i64::from(state.config.expire_days) - 30) * DAY) {
                                    div.warn { "Its backups expire on " (rfc3339(t + i64::from(state.config.expire_days) * DAY)) " unless it backs up." }
                                }
                            }
                            td {
                                @match failure {
                                    Some(f) => {
                                        span.bad { (f.result) ": " (f.message) }
                                        @for fix in &f.fix { div.muted { "What to do: " (fix) } }
                                    }
                                    None => { @if ok.is_some() { span.ok { "OK" } } @else { span.muted { "no attempt yet" } } }
                                }
                            }
                            td.wide { (d.last_backup.map(|t| format!("after {} (daily)", rfc3339(t + DAY))).unwrap_or_else(|| "as soon as it can".into())) }
                        }
                    }
                }
            }
        }
    };
    page("Devices", Some(&user), "/devices", body).into_response()
}

/// The category switches of a device, with the next backup's estimate.
fn categories_fragment(device: &str, rows: &[CategoryRow], csrf: &str) -> Markup {
    let next: u64 = rows.iter().filter(|c| c.enabled).map(|c| c.new_bytes).sum();
    let base = format!("/devices/{}/categories", path_escape(device));
    html! {
        section.card #categories aria-labelledby="cat-h" {
            h2 #cat-h { "What is backed up" }
            @if rows.is_empty() {
                p.muted { "This device has not reported its categories yet: they appear after its next backup." }
            } @else {
                form method="post" action=(base) {
                    input type="hidden" name="csrf" value=(csrf);
                    ul.switches {
                        @for c in rows {
                            @let id = format!("cat-{}", path_escape(&c.name));
                            li {
                                span {
                                    input type="checkbox" id=(id) name="on" value=(c.name) checked[c.enabled]
                                        hx-post=(format!("{base}/{}", path_escape(&c.name))) hx-target="#categories" hx-swap="outerHTML"
                                        hx-vals=(format!(r#"{{"enabled": "{}"}}"#, !c.enabled))
                                        aria-describedby=(format!("{id}-size"));
                                    label for=(id) { (c.name) }
                                }
                                span.muted id=(format!("{id}-size")) { (size(c.bytes)) " in " (c.files) " files" }
                            }
                        }
                    }
                    noscript { p { button type="submit" { "Save" } } }
                }
                p #next-backup data-bytes=(next) { "Next backup: up to " strong { (size(next)) } " (as of the device's last scan)." }
            }
        }
    }
}

async fn device_id(state: &SharedState, user: &WebUser, name: &str) -> Result<i64, Response> {
    device_of(state, user, name).await.map(|d| d.id)
}

async fn device_of(
    state: &SharedState,
    user: &WebUser,
    name: &str,
) -> Result<haven_store::meta::Device, Response> {
    match state.meta.devices(user.account.id).await {
        Ok(devs) => devs.into_iter().find(|d| d.name == name).ok_or_else(|| {
            problem(
                StatusCode::NOT_FOUND,
                &format!("Your account has no device named {name:?}."),
                "Pick a device from the Devices page.",
            )
        }),
        Err(e) => Err(problem_from(e.into())),
    }
}

#[derive(Deserialize)]
pub struct Deleted {
    deleted: Option<String>,
    freed: Option<u64>,
    signed_out: Option<u8>,
}

/// `POST /devices/{name}/signout` (password): ends the device's sign-in.
pub async fn sign_out_device(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    axum::Form(f): axum::Form<CsrfOnly>,
) -> Response {
    let back = format!("/devices/{}", path_escape(&name));
    let user = match destroying_user(&state, &headers, &f.csrf, &back).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let id = match device_id(&state, &user, &name).await {
        Ok(id) => id,
        Err(r) => return r,
    };
    let n = or_problem!(
        crate::api::auth::revoke(
            &state,
            user.account.id,
            haven_store::meta::TokenScope::Device(id),
            "device_removed",
        )
        .await
    );
    tracing::info!(account_id = user.account.id, device = %name, sign_ins = n, "device signed out in the console");
    Redirect::to(&format!("/devices/{}?signed_out=1", path_escape(&name))).into_response()
}

/// `GET /devices/{name}`.
pub async fn device(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<Deleted>,
) -> Response {
    let user = signed_in!(state, headers);
    let (id, signed_in) = match device_of(&state, &user, &name).await {
        Ok(d) => (d.id, d.signed_in),
        Err(r) => return r,
    };
    let cats = or_problem!(state.meta.categories(user.account.id, id).await);
    let rows = or_problem!(state.meta.snapshots(user.account.id, Some(id)).await);
    let mut backups = Vec::new();
    for r in rows {
        backups.push(or_problem!(
            crate::api::backup::with_freed(&state, user.account.id, r).await
        ));
    }
    let healing = backups.iter().any(|b| b.health != "ok");
    let body = html! {
        h1 { (name) }
        @if let (Some(d), Some(f)) = (&q.deleted, q.freed) {
            p.warn role="status" { "Deleted backup " (d.chars().take(8).collect::<String>()) "; " (size(f)) " freed." }
        }
        @if q.signed_out.is_some() {
            p.warn role="status" { (name) " was signed out: it stops backing up until it signs in again with the password." }
        }
        (categories_fragment(&name, &cats, &user.csrf))
        section.card aria-labelledby="s-h" {
            h2 #s-h { "Sign-in" }
            @if signed_in {
                p { "This device is signed in and can back up. If it was lost or stolen, sign it out: it can then neither back up nor read your backups' list, and signing in again needs the password." }
                form method="post" action=(format!("/devices/{}/signout", path_escape(&name))) {
                    input type="hidden" name="csrf" value=(user.csrf);
                    button.danger type="submit" { "Sign this device out" }
                }
            } @else {
                p.muted { "Signed out. It can sign in again with " code { "haven login" } " and the password." }
            }
        }
        section.card aria-labelledby="b-h" {
            h2 #b-h { "Backups" }
            @if healing {
                p.warn { "Some backups reference data the server found damaged. The next backup of this device uploads again whatever it still has, which repairs them." }
            }
            @if backups.is_empty() { p.muted { "No backups yet." } }
            @else {
                table {
                    thead { tr { th { "Time" } th.num { "Size" } th.num.wide { "Freed if deleted" } th { "Health" } th { span.muted { "Action" } } } }
                    tbody {
                        @for b in &backups {
                            tr {
                                td {
                                    (b.time)
                                    @if !b.complete { div.muted { "checkpoint of a running backup" } }
                                    @if b.partial { div.muted { "partial: storage was short" } }
                                }
                                td.num { (size(b.bytes)) }
                                td.num.wide { (size(b.freed_if_deleted)) }
                                td { @if b.health == "ok" { span.ok { "ok" } } @else { span.bad { "damaged" } } }
                                td { a.button.danger href=(format!("/devices/{}/backups/{}/delete", path_escape(&name), b.id)) aria-label=(format!("Delete the backup of {} ({})", b.time, b.id.chars().take(8).collect::<String>())) { "Delete" } }
                            }
                        }
                    }
                }
            }
        }
    };
    page(&name, Some(&user), "/devices", body).into_response()
}

#[derive(Deserialize)]
pub struct ToggleForm {
    enabled: Option<String>,
}

/// `POST /devices/{name}/categories/{category}` (htmx): one switch.
pub async fn toggle_category(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Path((name, category)): Path<(String, String)>,
    axum::Form(f): axum::Form<ToggleForm>,
) -> Response {
    let user = signed_in!(state, headers);
    if let Err(r) = check_csrf(&user, &headers, None) {
        return r;
    }
    if category.is_empty() || category.len() > 64 || category.chars().any(char::is_control) {
        return problem(
            StatusCode::BAD_REQUEST,
            "A category name is 1 to 64 printable characters.",
            "Pick a category from the list.",
        );
    }
    let id = match device_id(&state, &user, &name).await {
        Ok(id) => id,
        Err(r) => return r,
    };
    let enabled = f.enabled.as_deref() == Some("true");
    if !enabled && !user.password_is_recent(&state) {
        return confirm_password(&headers, &format!("/devices/{}", path_escape(&name)));
    }
    or_problem!(
        state
            .meta
            .category_set(user.account.id, id, &category, enabled)
            .await
    );
    or_problem!(crate::journal::categories(&state, user.account.id, id).await);
    let cats = or_problem!(state.meta.categories(user.account.id, id).await);
    categories_fragment(&name, &cats, &user.csrf).into_response()
}

/// `POST /devices/{name}/categories`: the switches without JavaScript.
pub async fn save_categories(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    axum::Form(fields): axum::Form<Vec<(String, String)>>,
) -> Response {
    let user = signed_in!(state, headers);
    let csrf = fields
        .iter()
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.as_str());
    if let Err(r) = check_csrf(&user, &headers, csrf) {
        return r;
    }
    let id = match device_id(&state, &user, &name).await {
        Ok(id) => id,
        Err(r) => return r,
    };
    let on: Vec<&str> = fields
        .iter()
        .filter(|(k, _)| k == "on")
        .map(|(_, v)| v.as_str())
        .collect();
    let cats = or_problem!(state.meta.categories(user.account.id, id).await);
    let switches_off = cats
        .iter()
        .any(|c| c.enabled && !on.contains(&c.name.as_str()));
    if switches_off && !user.password_is_recent(&state) {
        return confirm_password(&headers, &format!("/devices/{}", path_escape(&name)));
    }
    for c in &cats {
        let want = on.contains(&c.name.as_str());
        if want != c.enabled {
            or_problem!(
                state
                    .meta
                    .category_set(user.account.id, id, &c.name, want)
                    .await
            );
        }
    }
    or_problem!(crate::journal::categories(&state, user.account.id, id).await);
    Redirect::to(&format!("/devices/{}", path_escape(&name))).into_response()
}

async fn backup_of(
    state: &SharedState,
    user: &WebUser,
    device: &str,
    id: &str,
) -> Result<haven_proto::SnapshotRecord, Response> {
    let not_found = || {
        problem(
            StatusCode::NOT_FOUND,
            "There is no such backup in your account.",
            "Pick a backup from the device's page.",
        )
    };
    if !haven_proto::is_valid_id(id) {
        return Err(not_found());
    }
    let row = match state.meta.snapshot(user.account.id, id).await {
        Ok(Some(r)) if r.device == device => r,
        Ok(_) => return Err(not_found()),
        Err(e) => return Err(problem_from(e.into())),
    };
    crate::api::backup::with_freed(state, user.account.id, row)
        .await
        .map_err(problem_from)
}

/// `GET /devices/{name}/backups/{id}/delete`: the confirmation.
pub async fn confirm_delete(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Path((name, id)): Path<(String, String)>,
) -> Response {
    let user = signed_in!(state, headers);
    if !user.password_is_recent(&state) {
        return confirm_password(
            &headers,
            &format!("/devices/{}/backups/{id}/delete", path_escape(&name)),
        );
    }
    let b = match backup_of(&state, &user, &name, &id).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let body = html! {
        h1 { "Delete this backup?" }
        div.card {
            p { "The backup of " strong { (name) } " from " (b.time) " (" (b.files) " files, " (size(b.bytes)) ") will be deleted." }
            p #freed data-bytes=(b.freed_if_deleted) { "This frees " strong { (size(b.freed_if_deleted)) } " at once. Data other backups share stays." }
            form method="post" action=(format!("/devices/{}/backups/{}/delete", path_escape(&name), b.id)) {
                input type="hidden" name="csrf" value=(user.csrf);
                button.danger type="submit" { "Delete backup" }
                " "
                a href=(format!("/devices/{}", path_escape(&name))) { "Keep it" }
            }
        }
    };
    page("Delete backup", Some(&user), "/devices", body).into_response()
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    csrf: String,
}

/// `POST /devices/{name}/backups/{id}/delete`.
pub async fn delete_backup(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Path((name, id)): Path<(String, String)>,
    axum::Form(f): axum::Form<CsrfOnly>,
) -> Response {
    let back = format!("/devices/{}/backups/{id}/delete", path_escape(&name));
    let user = match destroying_user(&state, &headers, &f.csrf, &back).await {
        Ok(u) => u,
        Err(r) => return r,
    };
    let b = match backup_of(&state, &user, &name, &id).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    or_problem!(crate::journal::delete_snapshot(&state, user.account.id, &b.id).await);
    tracing::info!(account_id = user.account.id, snapshot = %b.id, "backup deleted in the console");
    Redirect::to(&format!(
        "/devices/{}?deleted={}&freed={}",
        path_escape(&name),
        b.id,
        b.freed_if_deleted
    ))
    .into_response()
}

/// `GET /history`.
pub async fn history(State(state): State<SharedState>, headers: HeaderMap) -> Response {
    let user = signed_in!(state, headers);
    let attempts: Vec<Attempt> = or_problem!(state.meta.attempts(user.account.id, None, 200).await)
        .into_iter()
        .map(crate::api::storage::attempt)
        .collect();
    let body = html! {
        h1 { "History" }
        div.card {
            @if attempts.is_empty() { p.muted { "No backup attempts yet." } }
            @else {
                table {
                    thead { tr { th { "Time" } th { "Device" } th { "Result" } th { "Reason and what to do" } } }
                    tbody {
                        @for a in &attempts {
                            tr {
                                td { (a.finished) }
                                td { (a.device) }
                                td { @if a.result == "ok" { span.ok { "ok" } } @else { span.bad { (a.result) } } }
                                td {
                                    (a.message)
                                    @if let Some(c) = &a.code { " " span.muted { "(" (c) ")" } }
                                    @for f in &a.fix { div.muted { "What to do: " (f) } }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page("History", Some(&user), "/history", body).into_response()
}

#[derive(Deserialize)]
pub struct AdminQuery {
    days: Option<i64>,
}

/// `GET /admin` (admins only).
pub async fn admin(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Query(q): Query<AdminQuery>,
) -> Response {
    let user = signed_in!(state, headers);
    if !user.account.is_admin {
        return problem(
            StatusCode::FORBIDDEN,
            "This page is for the server's administrators.",
            "Ask an administrator if you need something changed.",
        );
    }
    let days = q.days.unwrap_or(7).clamp(1, 36_500);
    let now = state.now();
    let accounts = or_problem!(state.meta.accounts().await);
    let mut users = Vec::new();
    let mut stale = Vec::new();
    for a in &accounts {
        let used = or_problem!(state.meta.usage(a.id).await).used;
        let plan = state.config.plan(a.plan.as_deref());
        for d in or_problem!(state.meta.devices(a.id).await) {
            if d.last_backup.is_none_or(|t| now - t > days * DAY) {
                stale.push((a.email.clone(), d.name, d.last_backup));
            }
        }
        users.push((
            a,
            plan.map(|p| p.name.clone()),
            plan.map(|p| p.quota_bytes),
            used,
        ));
    }
    let scrub = or_problem!(state.meta.job_last("scrub").await);
    let gc = or_problem!(state.meta.job_last("gc").await);
    let job = |j: &Option<(i64, i64, String)>| -> Markup {
        match j {
            None => html! { span.muted { "never ran" } },
            Some((_, finished, report)) => {
                let v: serde_json::Value = serde_json::from_str(report).unwrap_or_default();
                let figures: Vec<String> = v
                    .as_object()
                    .map(|o| {
                        o.iter()
                            .filter(|(k, _)| *k != "duration_secs")
                            .map(|(k, v)| format!("{k} {v}"))
                            .collect()
                    })
                    .unwrap_or_default();
                html! { (rfc3339(*finished)) ": " (figures.join(", ")) }
            }
        }
    };
    let body = html! {
        h1 { "Administration" }
        section.card aria-labelledby="u-h" {
            h2 #u-h { "Users" }
            table {
                thead { tr { th { "Email" } th { "Plan" } th.num { "Used" } th.num { "Quota" } } }
                tbody {
                    @for (a, plan, quota, used) in &users {
                        tr {
                            td { (a.email) @if a.is_admin { " " span.muted { "(admin)" } } }
                            td { (plan.clone().unwrap_or_else(|| "—".into())) }
                            td.num { (size(*used)) }
                            td.num { (quota.map(size).unwrap_or_else(|| "unlimited".into())) }
                        }
                    }
                }
            }
        }
        section.card aria-labelledby="p-h" {
            h2 #p-h { "Plans" }
            @if state.config.plans.is_empty() { p.muted { "No plans: accounts have no quota." } }
            ul {
                @for p in &state.config.plans {
                    li { (p.name) " — " (size(p.quota_bytes)) @if state.config.default_plan.as_deref() == Some(p.name.as_str()) { " (default)" } @if !p.selectable { " (given by an administrator)" } }
                }
            }
        }
        section.card aria-labelledby="h-h" {
            h2 #h-h { "Store health" }
            p { strong { "Last scrub: " } (job(&scrub)) }
            p { strong { "Last GC: " } (job(&gc)) }
        }
        section.card aria-labelledby="s-h" {
            h2 #s-h { "Devices not backed up for " (days) " days" }
            @if stale.is_empty() { p.ok { "Every device backed up recently." } }
            ul {
                @for (email, name, last) in &stale {
                    li { (email) " — " (name) ": " (last.map(rfc3339).unwrap_or_else(|| "never".into())) }
                }
            }
        }
    };
    page("Administration", Some(&user), "/admin", body).into_response()
}
