//! The account's compression dictionary on this device.
//!
//! Backups and restores ask the server for it before they seal or open a
//! blob. The first backup of an account with enough small files trains
//! one from a sample of them while it starts on its files, and offers it
//! if it stores other small files of the selection enough smaller; blobs
//! sealed after it is in use it. The server keeps the first
//! offered, so devices that train at the same time all end up with the
//! same one. A server from before dictionaries, or a dictionary that does
//! not open, leaves the device storing as it did without: a backup never
//! fails for the want of a dictionary.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use haven_format::blob;
use haven_format::dict::{Dictionary, SMALL_BLOB};
use haven_format::keys::Keys;
use haven_proto::ErrorCode;
use rand::Rng;
use rand::seq::SliceRandom;

use crate::Result;
use crate::remote::Remote;
use crate::selection::{Excluder, is_cache_dir};

/// Files sampled for training: on the benchmark, 250 small files gave
/// 95% of what 2,000 did (docs/PERFORMANCE.md, round 16).
const SAMPLE_FILES: usize = 250;
/// Files, besides the sample, that a trained dictionary is tried on.
const HELD_OUT: usize = 100;
/// A dictionary must store the held-out files this much smaller (in
/// thousandths) than zstd alone. Compressing with one takes more time:
/// 4% more on the benchmark's source files, where it saved 8%, and 63%
/// more on 200,000 files of 0–8 KiB, half of them random, where it saved
/// 0.4% (docs/PERFORMANCE.md, round 17).
const MIN_SAVING_PER_MILLE: u64 = 30;
/// Files picked before their sizes are looked at: the walk reads
/// directories only, and only these are asked for their size.
const CANDIDATES: usize = 4 * (SAMPLE_FILES + HELD_OUT);
/// After a try that found too few small files, or a dictionary that did
/// not earn its time, the next try waits this long: the walk is not worth
/// repeating at every backup.
const RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Fewer files than this, or fewer bytes, are too little to train on: the
/// account gets its dictionary at a later backup that has more.
const MIN_SAMPLE_FILES: usize = 100;
const MIN_SAMPLE_BYTES: u64 = 256 << 10;
/// Entries the sampling walk looks at, at most: a home directory of
/// millions of files is sampled from its first part.
const WALK_LIMIT: usize = 200_000;
/// Files shorter than this are stored as they are.
const MIN_FILE: u64 = 64;

/// The dictionary the account has on the server, as keys to open blobs
/// with: `keys` unchanged when there is none, when the server predates
/// dictionaries, or (with a warning) when it does not open.
pub fn for_reading(keys: Keys, remote: &dyn Remote) -> Result<Keys> {
    match remote.dictionary() {
        Ok(Some(sealed)) => Ok(opened(keys, &sealed)),
        Ok(None) => Ok(keys),
        Err(e) if e.code() == ErrorCode::NotFound => Ok(keys),
        Err(e) => Err(e),
    }
}

/// What a backup starts with: the account's keys, with its dictionary if it
/// has one, and whether this backup should [`train`] one. `tried` is a
/// file whose time records a try that found too few small files; the next
/// try waits [`RETRY_AFTER`] after it.
pub fn for_backup(keys: Keys, remote: &dyn Remote, tried: &Path) -> Result<(Keys, bool)> {
    match remote.dictionary() {
        Ok(Some(sealed)) => Ok((opened(keys, &sealed), false)),
        Ok(None) => {
            let recently = fs::metadata(tried)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|age| age < RETRY_AFTER));
            Ok((keys, !recently))
        }
        Err(e) if e.code() == ErrorCode::NotFound => Ok((keys, false)),
        Err(e) => Err(e),
    }
}

/// Trains a dictionary on a sample of the small files under `paths`,
/// offers it to the server and gives `keys` the one the server keeps. It
/// runs beside the backup, whose blobs use the dictionary from then on,
/// and never fails it: what goes wrong is logged, and the next backup
/// tries again.
pub fn train(
    keys: &Keys,
    remote: &dyn Remote,
    paths: &[PathBuf],
    excluder: &Excluder,
    level: i32,
    tried: &Path,
) {
    if level == 0 {
        return;
    }
    let started = std::time::Instant::now();
    let mut samples = sample(paths, excluder);
    let sampled = started.elapsed();
    let bytes: u64 = samples.iter().map(|s| s.len() as u64).sum();
    if samples.len() < MIN_SAMPLE_FILES || bytes < MIN_SAMPLE_BYTES {
        tracing::debug!(
            files = samples.len(),
            bytes,
            "too few small files to train a compression dictionary on"
        );
        // Only a hint: without it, the next backup walks again.
        let _ = fs::write(tried, b"");
        return;
    }
    // The last files read (in random order) are held out, to try the
    // dictionary on: what is left over after the sample, at least a fifth.
    let held = (samples.len().saturating_sub(SAMPLE_FILES))
        .max(samples.len() / 5)
        .min(HELD_OUT);
    let held_out = samples.split_off(samples.len() - held);
    let Some(dict) = Dictionary::train(&samples) else {
        let _ = fs::write(tried, b"");
        return;
    };
    let (without, with) = blob::stored_without_and_with(&held_out, level, &dict);
    tracing::debug!(
        files = samples.len(),
        bytes,
        size = dict.bytes().len(),
        held_out = held_out.len(),
        without,
        with,
        sample_ms = sampled.as_millis() as u64,
        ms = started.elapsed().as_millis() as u64,
        "trained a compression dictionary"
    );
    if held_out.is_empty() || with * 1000 > without * (1000 - MIN_SAVING_PER_MILLE) {
        // Not worth its time on these files; they may change.
        let _ = fs::write(tried, b"");
        return;
    }
    match remote.set_dictionary(dict.seal(keys)) {
        Ok(sealed) => {
            if let Some(d) = open(keys, &sealed) {
                keys.set_dictionary(d);
            }
        }
        Err(e) if e.code() == ErrorCode::NotFound => {}
        Err(e) => tracing::warn!(
            "the compression dictionary could not be stored on the server ({e}); \
             the next backup tries again"
        ),
    }
}

fn opened(keys: Keys, sealed: &[u8]) -> Keys {
    match open(&keys, sealed) {
        Some(d) => keys.with_dictionary(d),
        None => keys,
    }
}

fn open(keys: &Keys, sealed: &[u8]) -> Option<Dictionary> {
    Dictionary::open(keys, sealed)
        .inspect_err(|e| {
            tracing::warn!(
                "the account's compression dictionary on the server does not open ({e}); \
                 this device compresses without it, and cannot restore files stored with it until \
                 the server hands out an intact copy"
            )
        })
        .ok()
}

/// Reads up to [`SAMPLE_FILES`] + [`HELD_OUT`] small files chosen at random over the
/// selection, leaving out what the backup leaves out: a reservoir sample
/// of [`CANDIDATES`] files over the walk, of which the small ones are read.
/// The walk reads directories and never asks a file for its size, so it
/// costs about what `find` does.
fn sample(paths: &[PathBuf], excluder: &Excluder) -> Vec<Vec<u8>> {
    let mut rng = rand::thread_rng();
    let mut candidates: Vec<PathBuf> = Vec::with_capacity(CANDIDATES);
    let mut seen = 0usize;
    let mut visited = 0usize;
    let mut stack: Vec<PathBuf> = Vec::new();
    for p in paths {
        match fs::symlink_metadata(p) {
            Ok(m) if m.is_dir() => stack.push(p.clone()),
            Ok(m) if m.is_file() => keep(&mut candidates, &mut seen, p.clone(), &mut rng),
            _ => {}
        }
    }
    'walk: while let Some(dir) = stack.pop() {
        if excluder.cachedir_tags && is_cache_dir(&dir) {
            continue;
        }
        let Ok(rd) = fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            visited += 1;
            if visited > WALK_LIMIT {
                break 'walk;
            }
            let p = e.path();
            if excluder.excluded(&p, &e.file_name()) {
                continue;
            }
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() => keep(&mut candidates, &mut seen, p, &mut rng),
                _ => {}
            }
        }
    }
    // Walk order is not random within the reservoir; the pick must be.
    candidates.shuffle(&mut rng);
    candidates
        .iter()
        .filter_map(|p| read_small(p))
        .take(SAMPLE_FILES + HELD_OUT)
        .collect()
}

fn small(len: u64) -> bool {
    (MIN_FILE..SMALL_BLOB as u64).contains(&len)
}

/// Reservoir sampling: after `seen` files, each is in `chosen` with the
/// same chance.
fn keep(chosen: &mut Vec<PathBuf>, seen: &mut usize, p: PathBuf, rng: &mut impl Rng) {
    *seen += 1;
    if chosen.len() < CANDIDATES {
        chosen.push(p);
    } else {
        let i = rng.gen_range(0..*seen);
        if i < CANDIDATES {
            chosen[i] = p;
        }
    }
}

/// A file's content, if it is small.
fn read_small(p: &Path) -> Option<Vec<u8>> {
    if !small(fs::symlink_metadata(p).ok()?.len()) {
        return None;
    }
    let b = fs::read(p).ok()?;
    small(b.len() as u64).then_some(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_spreads_over_the_selection_and_leaves_out_what_is_excluded() {
        let dir = tempfile::tempdir().expect("tempdir");
        for d in ["a", "b", "skip"] {
            fs::create_dir(dir.path().join(d)).expect("mkdir");
            for i in 0..400 {
                fs::write(
                    dir.path().join(d).join(format!("{i}.txt")),
                    format!("{d} {i} ").repeat(20),
                )
                .expect("write");
            }
        }
        fs::write(dir.path().join("a/big"), vec![7u8; SMALL_BLOB]).expect("write");
        fs::write(dir.path().join("a/tiny"), b"x").expect("write");
        let excluder = Excluder::new(&["skip".to_string()], false, &[]).expect("excluder");
        let s = sample(&[dir.path().to_path_buf()], &excluder);
        assert_eq!(s.len(), SAMPLE_FILES + HELD_OUT);
        let from = |d: &str| s.iter().filter(|f| f.starts_with(d.as_bytes())).count();
        assert_eq!(from("skip"), 0);
        assert!(
            from("a ") > 50 && from("b ") > 50,
            "{} {}",
            from("a "),
            from("b ")
        );
        assert!(s.iter().all(|f| small(f.len() as u64)));
    }
}
