//! Fitting a backup into the quota: which categories go in, what to
//! reserve, and what the user can do when it does not fit.

use std::collections::HashSet;

use haven_proto::ErrorCode;

use crate::categories::Categorizer;
use crate::scan::Scan;
use crate::{ClientError, Remote, human_bytes};

/// What a backup does with a category.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// Backed up.
    Include,
    /// Switched off by the user: left out of the backup.
    Disabled,
    /// Does not fit: the previous backup's copy of its files is kept, new
    /// files are left out.
    Skipped,
}

/// The outcome of [`plan`].
#[derive(Clone, Debug)]
pub struct SpacePlan {
    /// Per category, indexed like [`Categorizer::names`].
    pub filter: Vec<Filter>,
    /// Upper bound of what the whole backup (enabled categories) needs.
    pub needed: u64,
    /// What the included part needs: the quota to reserve.
    pub reserve: u64,
}

impl SpacePlan {
    /// Skipped categories with what each needed.
    pub fn skipped(&self, c: &Categorizer, scan: &Scan) -> Vec<(String, u64)> {
        self.filter
            .iter()
            .enumerate()
            .filter(|(_, f)| **f == Filter::Skipped)
            .map(|(i, _)| (c.names()[i].clone(), scan.categories[i].need()))
            .collect()
    }
}

/// Decides which categories fit in `available` (no quota: all), taking
/// them in `priority` order and skipping those that do not fit.
pub fn plan(
    scan: &Scan,
    c: &Categorizer,
    disabled: &HashSet<String>,
    priority: &[String],
    available: Option<u64>,
) -> SpacePlan {
    let mut filter: Vec<Filter> = c
        .names()
        .iter()
        .map(|n| {
            if disabled.contains(n) {
                Filter::Disabled
            } else {
                Filter::Include
            }
        })
        .collect();
    let meta = scan.metadata_need();
    let needed = meta
        + filter
            .iter()
            .zip(&scan.categories)
            .filter(|(f, _)| **f == Filter::Include)
            .map(|(_, t)| t.need())
            .sum::<u64>();
    let Some(available) = available.filter(|a| needed > *a) else {
        return SpacePlan {
            filter,
            needed,
            reserve: needed,
        };
    };
    let mut left = available.saturating_sub(meta);
    let mut reserve = meta;
    for i in c.priority_order(priority) {
        if filter[i] != Filter::Include {
            continue;
        }
        let need = scan.categories[i].need();
        if need <= left {
            left -= need;
            reserve += need;
        } else {
            filter[i] = Filter::Skipped;
        }
    }
    SpacePlan {
        filter,
        needed,
        reserve,
    }
}

/// Ways to make room, biggest effect first: switching off a category,
/// deleting a backup (never a device's newest complete one), a bigger
/// plan. Fixes that make up less than a tenth of the shortfall are left
/// out as noise.
pub fn fixes(
    remote: &dyn Remote,
    c: &Categorizer,
    scan: &Scan,
    plan: &SpacePlan,
    quota: Option<u64>,
    available: u64,
) -> Vec<String> {
    let shortfall = plan.needed.saturating_sub(available);
    let mut out: Vec<(u64, String)> = Vec::new();
    for (i, name) in c.names().iter().enumerate() {
        let need = scan.categories[i].need();
        if plan.filter[i] != Filter::Disabled && need > 0 {
            out.push((
                need,
                format!(
                    "Switch off {name} (saves {}): haven categories off {name:?}",
                    human_bytes(need)
                ),
            ));
        }
    }
    out.extend(other_fixes(remote, quota));
    rank(out, shortfall)
}

/// Deleting backups (never a device's newest complete one) and bigger
/// plans, with their effect in bytes.
pub fn other_fixes(remote: &dyn Remote, quota: Option<u64>) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    if let Ok(mut backups) = remote.snapshots(None) {
        // Newest first: the first complete backup of each device stays.
        let mut newest = HashSet::new();
        backups.retain(|b| !(b.complete && newest.insert(b.device_id)));
        backups.sort_by_key(|b| std::cmp::Reverse(b.freed_if_deleted));
        for b in backups.iter().filter(|b| b.freed_if_deleted > 0).take(3) {
            let short = &b.id[..8.min(b.id.len())];
            out.push((
                b.freed_if_deleted,
                format!(
                    "Delete backup {short} of {} from {} (frees {}): haven backups delete {short}",
                    b.device,
                    b.time,
                    human_bytes(b.freed_if_deleted)
                ),
            ));
        }
    }
    if let (Some(q), Ok(plans)) = (quota, remote.plans()) {
        for p in plans.plans.iter().filter(|p| p.selectable && p.quota > q) {
            out.push((
                p.quota - q,
                format!(
                    "Move to the plan {} ({}): haven plan set {}",
                    p.name,
                    human_bytes(p.quota),
                    p.name
                ),
            ));
        }
    }
    out
}

/// Biggest effect first, leaving out fixes that make up less than a tenth
/// of the shortfall.
pub fn rank(mut fixes: Vec<(u64, String)>, shortfall: u64) -> Vec<String> {
    fixes.retain(|(effect, _)| *effect >= shortfall / 10);
    fixes.sort_by_key(|(effect, _)| std::cmp::Reverse(*effect));
    fixes.into_iter().take(6).map(|(_, f)| f).collect()
}

/// The error of a backup that does not fit.
pub fn quota_error(needed: u64, available: u64, fixes: Vec<String>) -> ClientError {
    let mut e = ClientError::new(
        ErrorCode::QuotaExceeded,
        format!(
            "Not enough storage: this backup needs up to {} and {} is free under your plan. Nothing was uploaded.",
            human_bytes(needed),
            human_bytes(available)
        ),
    );
    e.0.needed = Some(needed);
    e.0.available = Some(available);
    e.0.fix = fixes;
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::categories::{default_priority, default_rules};
    use crate::scan::CategoryTotals;

    #[test]
    fn categories_fit_in_priority_order() {
        let c = Categorizer::new(&default_rules(), None).expect("rules");
        let idx = |n: &str| c.names().iter().position(|x| x == n).expect("category");
        let mut scan = Scan {
            categories: vec![CategoryTotals::default(); c.names().len()],
            dirty_entries: 0,
        };
        let mb = 1_000_000;
        for (name, bytes) in [
            ("Photos", 50 * mb),
            ("Documents", 5 * mb),
            ("Music", 8 * mb),
        ] {
            scan.categories[idx(name)] = CategoryTotals {
                files: 1,
                bytes,
                new_files: 1,
                new_bytes: bytes,
            };
        }
        let none = HashSet::new();
        let all = plan(&scan, &c, &none, &default_priority(), None);
        assert!(all.filter.iter().all(|f| *f == Filter::Include));
        assert!(all.needed > 63 * mb);

        let p = plan(&scan, &c, &none, &default_priority(), Some(20 * mb));
        assert_eq!(p.filter[idx("Documents")], Filter::Include);
        assert_eq!(p.filter[idx("Photos")], Filter::Skipped, "too big");
        assert_eq!(
            p.filter[idx("Music")],
            Filter::Include,
            "smaller ones still go in"
        );
        assert!(p.reserve <= 20 * mb && p.reserve > 13 * mb);

        let off: HashSet<String> = ["Photos".to_string()].into();
        let p = plan(&scan, &c, &off, &default_priority(), Some(20 * mb));
        assert_eq!(p.filter[idx("Photos")], Filter::Disabled);
        assert!(
            !p.filter.contains(&Filter::Skipped),
            "fits once Photos is off"
        );
    }
}
