//! Categories: the per-app switches of a phone's backup settings, for the
//! files of a home directory. Each file belongs to exactly one category:
//! the first rule whose path pattern matches its path relative to the home
//! directory, else the first rule whose extensions include its extension,
//! else `Other`. The switches live on the server (per device); the rules
//! live in the client's config and can be overridden there.

use std::path::{Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};
use haven_proto::ErrorCode;
use serde::{Deserialize, Serialize};

use crate::{ClientError, Result};

/// The catch-all category.
pub const OTHER: &str = "Other";

/// One category's rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CategoryRule {
    pub name: String,
    /// Glob patterns on the path relative to the home directory
    /// (`Pictures/**`).
    #[serde(default)]
    pub paths: Vec<String>,
    /// File extensions, lower case, without the dot (`jpg`).
    #[serde(default)]
    pub extensions: Vec<String>,
}

fn rule(name: &str, paths: &[&str], extensions: &[&str]) -> CategoryRule {
    CategoryRule {
        name: name.into(),
        paths: paths.iter().map(|p| p.to_string()).collect(),
        extensions: extensions.iter().map(|e| e.to_string()).collect(),
    }
}

/// The built-in rules.
pub fn default_rules() -> Vec<CategoryRule> {
    vec![
        rule("App data", &[".config/**", ".local/share/**"], &[]),
        rule(
            "Photos",
            &["Pictures/**", "DCIM/**", "Photos/**"],
            &[
                "jpg", "jpeg", "png", "heic", "heif", "gif", "webp", "tif", "tiff", "raw", "dng",
                "cr2", "cr3", "nef", "arw", "orf", "rw2", "mp4", "mov", "m4v", "3gp",
            ],
        ),
        rule(
            "Videos",
            &["Videos/**"],
            &["mkv", "avi", "webm", "wmv", "mpg", "mpeg"],
        ),
        rule(
            "Music",
            &["Music/**"],
            &[
                "mp3", "flac", "ogg", "oga", "opus", "m4a", "aac", "wav", "wma",
            ],
        ),
        rule(
            "Documents",
            &["Documents/**"],
            &[
                "pdf", "doc", "docx", "odt", "ods", "odp", "xls", "xlsx", "ppt", "pptx", "rtf",
                "epub", "txt", "md",
            ],
        ),
        rule("Desktop", &["Desktop/**"], &[]),
        rule("Downloads", &["Downloads/**"], &[]),
    ]
}

/// The order in which categories are backed up when the storage cannot
/// hold them all.
pub fn default_priority() -> Vec<String> {
    [
        "App data",
        "Documents",
        "Desktop",
        "Photos",
        "Music",
        "Videos",
        "Downloads",
        OTHER,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The built-in rules with `overrides` applied: a rule with the name of a
/// built-in one replaces it, others are added after them.
pub fn merged_rules(overrides: &[CategoryRule]) -> Vec<CategoryRule> {
    let mut rules = default_rules();
    for o in overrides {
        match rules.iter_mut().find(|r| r.name == o.name) {
            Some(r) => *r = o.clone(),
            None => rules.push(o.clone()),
        }
    }
    rules
}

/// Files sorted into categories. Index `names().len() - 1` is `Other`.
pub struct Categorizer {
    names: Vec<String>,
    paths: Vec<GlobSet>,
    extensions: Vec<Vec<String>>,
    home: Option<PathBuf>,
}

impl Categorizer {
    pub fn new(rules: &[CategoryRule], home: Option<PathBuf>) -> Result<Self> {
        let mut names = Vec::new();
        let mut paths = Vec::new();
        let mut extensions = Vec::new();
        for r in rules.iter().filter(|r| r.name != OTHER) {
            if r.name.trim().is_empty() || r.name.len() > 64 {
                return Err(ClientError::new(
                    ErrorCode::ConfigInvalid,
                    format!("The category name {:?} is empty or too long.", r.name),
                )
                .fix("Give each [[categories]] in config.toml a name of 1 to 64 characters."));
            }
            let mut b = GlobSetBuilder::new();
            for p in &r.paths {
                let g = Glob::new(p.trim_start_matches('/')).map_err(|e| {
                    ClientError::new(
                        ErrorCode::ConfigInvalid,
                        format!(
                            "The path pattern {p:?} of category {:?} is invalid: {e}.",
                            r.name
                        ),
                    )
                    .fix("Fix the pattern in config.toml.")
                })?;
                b.add(g);
            }
            let set = b.build().map_err(|e| {
                ClientError::new(
                    ErrorCode::ConfigInvalid,
                    format!("The patterns of category {:?} are invalid: {e}.", r.name),
                )
            })?;
            names.push(r.name.clone());
            paths.push(set);
            extensions.push(
                r.extensions
                    .iter()
                    .map(|e| e.trim_start_matches('.').to_ascii_lowercase())
                    .collect(),
            );
        }
        names.push(OTHER.to_string());
        Ok(Categorizer {
            names,
            paths,
            extensions,
            home,
        })
    }

    /// Category names; the last is `Other`.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The index of the category of the file at `path` (absolute).
    pub fn category(&self, path: &Path) -> usize {
        if let Some(rel) = self.home.as_deref().and_then(|h| path.strip_prefix(h).ok())
            && let Some(i) = self.paths.iter().position(|g| g.is_match(rel))
        {
            return i;
        }
        if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
            let ext = ext.to_ascii_lowercase();
            if let Some(i) = self.extensions.iter().position(|x| x.contains(&ext)) {
                return i;
            }
        }
        self.names.len() - 1
    }

    /// Category indices in backup priority order: those named in
    /// `priority` first, in that order, then the rest in rule order.
    pub fn priority_order(&self, priority: &[String]) -> Vec<usize> {
        let mut order: Vec<usize> = priority
            .iter()
            .filter_map(|p| self.names.iter().position(|n| n == p))
            .collect();
        for i in 0..self.names.len() {
            if !order.contains(&i) {
                order.push(i);
            }
        }
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_fall_into_the_expected_categories() {
        let c =
            Categorizer::new(&default_rules(), Some(PathBuf::from("/home/ann"))).expect("rules");
        let cat = |p: &str| c.names()[c.category(Path::new(p))].clone();
        assert_eq!(cat("/home/ann/Pictures/2024/a.jpg"), "Photos");
        assert_eq!(
            cat("/home/ann/Pictures/notes.txt"),
            "Photos",
            "the folder decides"
        );
        assert_eq!(cat("/home/ann/DCIM/IMG_1.HEIC"), "Photos");
        assert_eq!(
            cat("/home/ann/projects/shot.PNG"),
            "Photos",
            "then the extension"
        );
        assert_eq!(cat("/home/ann/Downloads/x.jpg"), "Downloads");
        assert_eq!(cat("/home/ann/.config/app/settings.ini"), "App data");
        assert_eq!(cat("/home/ann/.local/share/app/db"), "App data");
        assert_eq!(cat("/home/ann/Documents/tax.pdf"), "Documents");
        assert_eq!(cat("/home/ann/Music/a.flac"), "Music");
        assert_eq!(cat("/home/ann/Videos/a.mp4"), "Videos");
        assert_eq!(cat("/home/ann/Desktop/todo"), "Desktop");
        assert_eq!(cat("/home/ann/src/main.rs"), "Other");
        assert_eq!(
            cat("/srv/data/report.pdf"),
            "Documents",
            "outside home: extension"
        );
    }

    #[test]
    fn overrides_replace_or_add_and_priority_orders() {
        let rules = merged_rules(&[
            rule("Photos", &["Camera/**"], &[]),
            rule("Code", &["src/**"], &[]),
        ]);
        let c = Categorizer::new(&rules, Some(PathBuf::from("/h"))).expect("rules");
        let cat = |p: &str| c.names()[c.category(Path::new(p))].clone();
        assert_eq!(cat("/h/Camera/a.jpg"), "Photos");
        assert_eq!(
            cat("/h/x/a.jpg"),
            "Other",
            "the replaced rule has no extensions"
        );
        assert_eq!(cat("/h/src/lib.rs"), "Code");
        let order = c.priority_order(&["Code".into(), "Photos".into()]);
        assert_eq!(c.names()[order[0]], "Code");
        assert_eq!(c.names()[order[1]], "Photos");
        assert_eq!(order.len(), c.names().len());
        assert!(Categorizer::new(&[rule("Bad", &["a["], &[])], None).is_err());
    }
}
