//! Where the storage goes: usage, plans, categories, the history of
//! backup attempts, and the account's compression dictionary.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use haven_proto::*;
use haven_store::meta::{AttemptRow, CategoryRow};
use serde::Deserialize;

use super::auth::Caller;
use super::{device_id, parse_rfc3339, quota, rfc3339};
use crate::error::{ApiError, ApiResult};
use crate::state::SharedState;

#[derive(Deserialize)]
pub struct DeviceQuery {
    device: Option<String>,
    limit: Option<u32>,
}

/// `GET /v1/dictionary`: the account's sealed compression dictionary, or
/// 204 when no device has set one yet.
pub async fn dictionary(
    State(state): State<SharedState>,
    caller: Caller,
) -> ApiResult<axum::response::Response> {
    Ok(
        match state.meta.account_dictionary(caller.account_id).await? {
            Some(sealed) => sealed.into_response(),
            None => StatusCode::NO_CONTENT.into_response(),
        },
    )
}

/// `PUT /v1/dictionary`: sets the account's sealed compression dictionary
/// unless it has one, and answers with the one it has now (the first
/// device's wins; a dictionary is never replaced, since the blobs
/// compressed with it need it). Its copy in the object store is written
/// before the database takes it, so a rebuilt database has it too.
pub async fn set_dictionary(
    State(state): State<SharedState>,
    caller: Caller,
    body: Bytes,
) -> ApiResult<Vec<u8>> {
    haven_format::dict::check_sealed_framing(&body).map_err(|e| {
        ApiError::bad_request(format!("This is not a sealed compression dictionary: {e}."))
    })?;
    let _lock = state.dictionary_lock.lock().await;
    if let Some(sealed) = state.meta.account_dictionary(caller.account_id).await? {
        return Ok(sealed);
    }
    crate::journal::dictionary(&state, caller.account_id, &body).await?;
    Ok(state
        .meta
        .account_dictionary_init(caller.account_id, &body)
        .await?)
}

/// `GET /v1/usage`.
pub async fn usage(
    State(state): State<SharedState>,
    caller: Caller,
) -> ApiResult<Json<UsageResponse>> {
    Ok(Json(usage_of(&state, caller.account_id).await?))
}

/// Where an account's storage went (the API's and the console's figures).
pub async fn usage_of(state: &SharedState, account_id: i64) -> ApiResult<UsageResponse> {
    let account = state.meta.account(account_id).await?;
    let plan = state
        .config
        .plan(account.and_then(|a| a.plan).as_deref())
        .cloned();
    let u = state.meta.usage(account_id).await?;
    let devices = state.meta.devices(account_id).await?;
    let mut categories = Vec::new();
    for (device, json) in &u.categories {
        let stats: Vec<CategoryStat> = serde_json::from_str(json).unwrap_or_default();
        categories.extend(stats.into_iter().map(|c| CategoryUsage {
            device: device.clone(),
            category: c.name,
            bytes: c.bytes,
            files: c.files,
        }));
    }
    let quota = plan.as_ref().map(|p| p.quota_bytes);
    Ok(UsageResponse {
        plan: plan.map(|p| p.name),
        quota,
        used: u.used,
        free: quota.map(|q| q.saturating_sub(u.used + u.reserved)),
        reserved: u.reserved,
        stored_physical: u.stored_physical,
        devices: u
            .devices
            .into_iter()
            .map(|(device, bytes)| DeviceUsage { device, bytes })
            .collect(),
        categories,
        expiring: crate::retention::expiring(state.config.expire_days, state.now(), &devices),
    })
}

/// `GET /v1/plans`.
pub async fn plans(
    State(state): State<SharedState>,
    caller: Caller,
) -> ApiResult<Json<PlansResponse>> {
    let account = state.meta.account(caller.account_id).await?;
    let current = state
        .config
        .plan(account.and_then(|a| a.plan).as_deref())
        .map(|p| p.name.clone());
    Ok(Json(PlansResponse {
        current,
        plans: state
            .config
            .plans
            .iter()
            .map(|p| PlanInfo {
                name: p.name.clone(),
                quota: p.quota_bytes,
                selectable: p.selectable,
            })
            .collect(),
    }))
}

/// `PUT /v1/plan`: the user moves to a plan the server lets users choose.
/// A plan smaller than what is used is refused.
pub async fn set_plan(
    State(state): State<SharedState>,
    caller: Caller,
    Json(req): Json<SetPlanRequest>,
) -> ApiResult<StatusCode> {
    let Some(plan) = state.config.plans.iter().find(|p| p.name == req.plan) else {
        let names: Vec<&str> = state
            .config
            .plans
            .iter()
            .filter(|p| p.selectable)
            .map(|p| p.name.as_str())
            .collect();
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::PlanNotAllowed,
            format!("This server has no plan named {:?}.", req.plan),
        )
        .fix(if names.is_empty() {
            "This server has no plans to choose from.".to_string()
        } else {
            format!("Choose one of: {}.", names.join(", "))
        }));
    };
    if !plan.selectable {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ErrorCode::PlanNotAllowed,
            format!(
                "The plan {:?} can only be given by the server's operator.",
                plan.name
            ),
        )
        .fix("Ask the operator: `haven-server user set-plan EMAIL PLAN`."));
    }
    let current = quota(&state, caller.account_id).await?;
    if current.is_some_and(|q| plan.quota_bytes < q) {
        caller.require_password()?;
    }
    let used = state.meta.usage(caller.account_id).await?.used;
    if used > plan.quota_bytes {
        let mut e = ApiError::quota_exceeded(used - plan.quota_bytes, 0);
        e.body.message = format!(
            "Your backups use {used} bytes, more than the {} bytes of the plan {}.",
            plan.quota_bytes, plan.name
        );
        e.body.fix = vec![
            "Delete backups you no longer need first (`haven storage` shows what each frees), then change plan.".into(),
            "Or choose a plan at least as big as what you use: `haven plan list`.".into(),
        ];
        return Err(e);
    }
    state
        .meta
        .account_set_plan(caller.account_id, Some(&plan.name))
        .await?;
    crate::journal::account(&state, caller.account_id).await?;
    tracing::info!(account_id = caller.account_id, device_id = caller.device_id, addr = %caller.peer.text(), plan = %plan.name, "plan changed by the user");
    Ok(StatusCode::NO_CONTENT)
}

fn category_info(r: CategoryRow) -> CategoryInfo {
    CategoryInfo {
        name: r.name,
        enabled: r.enabled,
        files: r.files,
        bytes: r.bytes,
        new_bytes: r.new_bytes,
        scanned: r.scanned.map(rfc3339),
    }
}

const MAX_CATEGORY_NAME: usize = 64;

fn check_category(name: &str) -> ApiResult<()> {
    if name.is_empty() || name.len() > MAX_CATEGORY_NAME || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "A category name is 1 to 64 printable characters.",
        ));
    }
    Ok(())
}

/// `GET /v1/categories[?device=NAME]`.
pub async fn categories(
    State(state): State<SharedState>,
    caller: Caller,
    Query(q): Query<DeviceQuery>,
) -> ApiResult<Json<Vec<CategoryInfo>>> {
    let device = device_id(&state, &caller, q.device.as_deref()).await?;
    let rows = state.meta.categories(caller.account_id, device).await?;
    Ok(Json(rows.into_iter().map(category_info).collect()))
}

/// `PUT /v1/categories/{name}[?device=NAME]`.
pub async fn set_category(
    State(state): State<SharedState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<DeviceQuery>,
    Json(req): Json<SetCategoryRequest>,
) -> ApiResult<Json<Vec<CategoryInfo>>> {
    check_category(&name)?;
    if !req.enabled {
        caller.require_password()?;
    }
    let device = device_id(&state, &caller, q.device.as_deref()).await?;
    if !req.enabled {
        tracing::info!(account_id = caller.account_id, device_id = caller.device_id, addr = %caller.peer.text(), category = %name, of_device = device, "category switched off");
    }
    state
        .meta
        .category_set(caller.account_id, device, &name, req.enabled)
        .await?;
    crate::journal::categories(&state, caller.account_id, device).await?;
    let rows = state.meta.categories(caller.account_id, device).await?;
    Ok(Json(rows.into_iter().map(category_info).collect()))
}

/// `POST /v1/categories`: the device's scan.
pub async fn scanned(
    State(state): State<SharedState>,
    caller: Caller,
    Json(req): Json<ScanReport>,
) -> ApiResult<Json<Vec<CategoryInfo>>> {
    if req.categories.len() > 256 {
        return Err(ApiError::bad_request("At most 256 categories."));
    }
    let mut rows = Vec::with_capacity(req.categories.len());
    for c in req.categories {
        check_category(&c.name)?;
        rows.push(CategoryRow {
            name: c.name,
            enabled: true,
            files: c.files,
            bytes: c.bytes,
            new_bytes: c.new_bytes,
            scanned: None,
        });
    }
    state
        .meta
        .categories_scanned(caller.account_id, caller.device_id, &rows)
        .await?;
    let rows = state
        .meta
        .categories(caller.account_id, caller.device_id)
        .await?;
    Ok(Json(rows.into_iter().map(category_info).collect()))
}

/// `POST /v1/attempts`.
pub async fn add_attempt(
    State(state): State<SharedState>,
    caller: Caller,
    Json(a): Json<Attempt>,
) -> ApiResult<StatusCode> {
    if !matches!(a.result.as_str(), "ok" | "partial" | "failed" | "paused") {
        return Err(ApiError::bad_request(
            "result is one of ok, partial, failed, paused.",
        ));
    }
    let clip = |s: &str, n: usize| s.chars().take(n).collect::<String>();
    let row = AttemptRow {
        device: String::new(),
        started: parse_rfc3339(&a.started)?,
        finished: parse_rfc3339(&a.finished)?,
        result: a.result,
        code: a.code.map(|c| clip(&c, 64)),
        message: clip(&a.message, 4000),
        fix: serde_json::to_string(
            &a.fix
                .iter()
                .take(10)
                .map(|f| clip(f, 1000))
                .collect::<Vec<_>>(),
        )
        .unwrap_or_else(|_| "[]".into()),
        snapshot: a.snapshot.filter(|s| is_valid_id(s)),
        uploaded: a.uploaded_bytes,
        received: state.now(),
    };
    state
        .meta
        .attempt_add(caller.account_id, caller.device_id, &row)
        .await?;
    Ok(StatusCode::CREATED)
}

/// `GET /v1/attempts[?device=NAME][&limit=N]`: newest first; every
/// device's without `device`.
pub async fn attempts(
    State(state): State<SharedState>,
    caller: Caller,
    Query(q): Query<DeviceQuery>,
) -> ApiResult<Json<Vec<Attempt>>> {
    let device = match &q.device {
        Some(name) => Some(device_id(&state, &caller, Some(name)).await?),
        None => None,
    };
    let rows = state
        .meta
        .attempts(caller.account_id, device, q.limit.unwrap_or(100).min(1000))
        .await?;
    Ok(Json(rows.into_iter().map(attempt).collect()))
}

/// An attempt as the API and the console show it.
pub fn attempt(r: AttemptRow) -> Attempt {
    Attempt {
        device: r.device,
        started: rfc3339(r.started),
        finished: rfc3339(r.finished),
        result: r.result,
        code: r.code,
        message: r.message,
        fix: serde_json::from_str(&r.fix).unwrap_or_default(),
        snapshot: r.snapshot,
        uploaded_bytes: r.uploaded,
        received: Some(rfc3339(r.received)),
    }
}
