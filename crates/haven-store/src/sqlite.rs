//! The embedded metadata store: SQLite in WAL mode with `synchronous=FULL`,
//! so an acknowledged commit survives power loss. Writes run in
//! `BEGIN IMMEDIATE` transactions: SQLite has one writer, and taking the
//! write lock up front avoids the deadlock of two readers upgrading.

use std::collections::VecDeque;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use haven_format::{BlobId, PackId};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use crate::meta::*;
use crate::refset;
use crate::{Clock, StoreError};

/// The schema's migrations, in order; `PRAGMA user_version` counts those
/// applied. Public for the tests that build a database of an older schema.
#[doc(hidden)]
pub const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/sqlite/0001_init.sql"),
    include_str!("../migrations/sqlite/0002_sessions.sql"),
    include_str!("../migrations/sqlite/0003_usage.sql"),
    include_str!("../migrations/sqlite/0004_plans.sql"),
    include_str!("../migrations/sqlite/0005_integrity.sql"),
    include_str!("../migrations/sqlite/0006_console.sql"),
    include_str!("../migrations/sqlite/0007_ref_deltas.sql"),
    include_str!("../migrations/sqlite/0008_ref_keys.sql"),
    include_str!("../migrations/sqlite/0009_pack_numbers.sql"),
    include_str!("../migrations/sqlite/0010_blob_numbers.sql"),
    include_str!("../migrations/sqlite/0011_dictionary.sql"),
    include_str!("../migrations/sqlite/0012_device_keys.sql"),
    include_str!("../migrations/sqlite/0013_auth_failures.sql"),
];

/// SQLite behind [`MetaStore`].
#[derive(Clone, Debug)]
pub struct SqliteMeta {
    pool: SqlitePool,
    /// Read-only connections for the lookups of every request and of a
    /// restore's every blob.
    lookups: Arc<Lookups>,
    sets: Arc<Mutex<SetCache>>,
    clock: Clock,
}

/// Reference sets read or written lately. A snapshot's set never changes
/// while the snapshot exists, so an entry stays true until it is deleted:
/// a nightly commit finds its parent's set here instead of reading its
/// chain (84,000 ids for the benchmark dataset: 28 ms in the sqlite3
/// shell alone).
#[derive(Default)]
struct SetCache {
    entries: VecDeque<(i64, String, Arc<StoredSet>)>,
    ids: usize,
    /// At most this many ids (0: nothing is kept).
    capacity: usize,
    /// Counts forgetting: a set read before a deletion is not put back
    /// after it.
    generation: u64,
}

/// How many ids the cache holds at most (32 bytes each: 16 MiB).
const CACHE_IDS: usize = 1 << 19;

/// Read-only connections for lookups, each used on the blocking thread
/// that asks (rusqlite) rather than through sqlx.
///
/// sqlx runs every statement on a worker thread of the connection's own and
/// hands the answer back, which cost about 40 µs per statement here. A
/// restore looks up every blob it fetches, and every request its session
/// token: the 84,017 blobs of the benchmark dataset, in batches of 123,
/// took 363 ms through sqlx and take 150 ms here; the server's CPU for a
/// whole restore fell by about 30% (PERFORMANCE.md, round 12). Writes stay
/// on sqlx's pool.
struct Lookups {
    path: std::path::PathBuf,
    idle: Mutex<Vec<rusqlite::Connection>>,
    /// Bounds the connections open at once, and so their page caches. A
    /// permit is held until the blocking work ends, even when the request
    /// that asked has gone.
    permits: Arc<tokio::sync::Semaphore>,
}

/// Lookup connections open at most.
const LOOKUP_CONNECTIONS: usize = 2;

/// SQLite's page cache on each lookup connection, in KiB. With SQLite's
/// default of 2 MiB a restore's lookups read most index pages from the
/// file again (a `pread` and a copy per 4 KiB page). Only these few
/// connections get it, so the server's memory grows by at most their
/// number times this, whatever the database's size.
const LOOKUP_CACHE: i64 = 16 << 10;

impl Lookups {
    fn open(&self) -> rusqlite::Result<rusqlite::Connection> {
        use rusqlite::OpenFlags;
        let conn = rusqlite::Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(30))?;
        conn.pragma_update(None, "cache_size", -LOOKUP_CACHE)?;
        conn.set_prepared_statement_cache_capacity(8);
        Ok(conn)
    }

    /// Runs `f` on an idle connection (or a new one) on a blocking thread.
    async fn run<R, F>(self: &Arc<Self>, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&rusqlite::Connection) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Invalid("the metadata store is closed".into()))?;
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let idle = me.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let conn = match idle {
                Some(c) => c,
                None => me.open()?,
            };
            let r = f(&conn);
            // A connection that failed is dropped: the next opens afresh.
            if r.is_ok() {
                me.idle.lock().unwrap_or_else(|e| e.into_inner()).push(conn);
            }
            r
        })
        .await
        .map_err(|e| StoreError::Io(std::io::Error::other(e)))?
    }
}

impl std::fmt::Debug for Lookups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lookups")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for SetCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetCache")
            .field("sets", &self.entries.len())
            .field("ids", &self.ids)
            .finish()
    }
}

impl SetCache {
    fn get(&self, account_id: i64, id: &str) -> Option<Arc<StoredSet>> {
        self.entries
            .iter()
            .find(|(a, s, _)| *a == account_id && s == id)
            .map(|(_, _, set)| set.clone())
    }

    fn put(&mut self, account_id: i64, id: &str, set: Arc<StoredSet>) {
        self.forget(|a, s| a == account_id && s == id);
        if set.ids.len() > self.capacity {
            return;
        }
        self.ids += set.ids.len();
        self.entries.push_back((account_id, id.to_string(), set));
        while self.ids > self.capacity
            && let Some((_, _, old)) = self.entries.pop_front()
        {
            self.ids -= old.ids.len();
        }
    }

    fn forget(&mut self, gone: impl Fn(i64, &str) -> bool) {
        self.generation += 1;
        let ids = &mut self.ids;
        self.entries.retain(|(a, s, set)| {
            let keep = !gone(*a, s);
            if !keep {
                *ids -= set.ids.len();
            }
            keep
        });
    }
}

fn blob_id(bytes: &[u8]) -> Result<BlobId, StoreError> {
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|_| StoreError::Invalid("stored blob id has a wrong length".into()))?;
    Ok(BlobId(arr))
}

fn snapshot_row(r: &sqlx::sqlite::SqliteRow) -> Result<SnapshotRow, StoreError> {
    Ok(SnapshotRow {
        id: r.try_get("id")?,
        device_id: r.try_get("device_id")?,
        device: r.try_get("device")?,
        time: r.try_get("time")?,
        files: r.try_get::<i64, _>("files")? as u64,
        bytes: r.try_get::<i64, _>("bytes")? as u64,
        snapshot_blob: blob_id(&r.try_get::<Vec<u8>, _>("snapshot_blob")?)?,
        parent: r.try_get("parent")?,
        client_version: r.try_get("client_version")?,
        blobs: r.try_get::<i64, _>("blobs")? as u64,
        complete: r.try_get("complete")?,
        partial: r.try_get("partial")?,
        categories: r.try_get("categories")?,
        // Filled in by `with_damaged`.
        damaged: 0,
        created: r.try_get("created")?,
    })
}

fn account_row(r: &sqlx::sqlite::SqliteRow) -> Result<Account, StoreError> {
    Ok(Account {
        id: r.try_get("id")?,
        email: r.try_get("email")?,
        kdf: r.try_get("kdf")?,
        auth_hash: r.try_get("auth_hash")?,
        wrapped_key: r.try_get("wrapped_key")?,
        recovery_auth_hash: r.try_get("recovery_auth_hash")?,
        recovery_wrapped_key: r.try_get("recovery_wrapped_key")?,
        is_admin: r.try_get("is_admin")?,
        plan: r.try_get("plan")?,
        created: r.try_get("created")?,
    })
}

const ACCOUNT_SELECT: &str = "SELECT id, email, kdf, auth_hash, wrapped_key, recovery_auth_hash, \
     recovery_wrapped_key, is_admin, plan, created FROM accounts";

/// Stored size of every blob of the account (`?1`) that a snapshot or an
/// open upload session references, each counted once.
const USED: &str = "SELECT COALESCE(SUM(b.length), 0) FROM blobs b WHERE b.account_id = ?1 AND (\
     EXISTS (SELECT 1 FROM snapshot_refs r WHERE r.blob = b.no) \
     OR b.pack IN (SELECT p.no FROM packs p JOIN sessions s ON s.account_id = p.account_id \
     AND s.id = p.session_id WHERE p.account_id = ?1 AND s.closed IS NULL))";

/// Quota reserved by the account's (`?1`) open sessions other than `?2`,
/// active since `?3`, beyond what they stored so far.
const RESERVED: &str = "SELECT COALESCE(SUM(MAX(0, s.reserved - COALESCE((SELECT SUM(b.length) \
     FROM packs p JOIN blobs b ON b.pack = p.no \
     WHERE p.account_id = s.account_id AND p.session_id = s.id), 0))), 0) \
     FROM sessions s WHERE s.account_id = ?1 AND s.closed IS NULL AND s.id <> ?2 \
     AND s.reserved > 0 AND s.last_active >= ?3";

/// Rows per multi-row statement: one statement per row costs a round trip
/// through the pool's worker each (~15 µs), which dominated commits of
/// tens of thousands of references.
const BATCH: usize = 500;

/// `?, ?, …` for `n` values.
fn marks(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// `(?, …), (?, …), …`: `n` rows of `cols` values, for a multi-row INSERT.
fn rows(n: usize, cols: usize) -> String {
    vec![format!("({})", marks(cols)); n].join(", ")
}

/// The `damaged` state of those of `ids` the account has indexed.
async fn blob_states(
    conn: &mut sqlx::SqliteConnection,
    account_id: i64,
    ids: &[BlobId],
) -> Result<std::collections::HashMap<BlobId, i64>, StoreError> {
    let mut out = std::collections::HashMap::with_capacity(ids.len());
    for part in ids.chunks(BATCH) {
        let sql = format!(
            "SELECT id, damaged FROM blobs WHERE account_id = ? AND id IN ({})",
            marks(part.len())
        );
        let mut q = sqlx::query(&sql).bind(account_id);
        for id in part {
            q = q.bind(&id.0[..]);
        }
        for row in q.fetch_all(&mut *conn).await? {
            let id: Vec<u8> = row.try_get(0)?;
            out.insert(blob_id(&id)?, row.try_get::<i64, _>(1)?);
        }
    }
    Ok(out)
}

/// Where each of `ids` is stored, in order (an id asked for twice is
/// answered twice); `None` for a blob the account lacks, or whose pack row
/// is gone.
fn locate(
    c: &rusqlite::Connection,
    account_id: i64,
    ids: &[BlobId],
) -> Result<Vec<Option<BlobLocation>>, StoreError> {
    // One statement for the whole batch: the ids go in as one blob, cut
    // into 32-byte ids by a counter. `CROSS JOIN` keeps SQLite walking the
    // counter first and looking each id up by key; left to choose, it took
    // over a minute for the same batches.
    let mut q = c.prepare_cached(
        "WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i + 1 < ?3) \
         SELECT k.i, b.hash, b.offset, b.length, p.object_key FROM k CROSS \
         JOIN blobs b ON b.account_id = ?1 AND b.id = substr(?2, k.i * 32 + 1, 32) \
         CROSS JOIN packs p ON p.no = b.pack",
    )?;
    let mut out: Vec<Option<BlobLocation>> = vec![None; ids.len()];
    if ids.is_empty() {
        return Ok(out);
    }
    let mut all = Vec::with_capacity(ids.len() * 32);
    for id in ids {
        all.extend_from_slice(&id.0);
    }
    let bad = || StoreError::Invalid("stored blob locations are malformed".into());
    let mut rows = q.query(rusqlite::params![account_id, all, ids.len() as i64])?;
    while let Some(r) = rows.next()? {
        let i: i64 = r.get(0)?;
        let slot = usize::try_from(i)
            .ok()
            .and_then(|i| out.get_mut(i))
            .ok_or_else(bad)?;
        *slot = Some(BlobLocation {
            hash: r.get(1)?,
            offset: u64::try_from(r.get::<_, i64>(2)?).map_err(|_| bad())?,
            length: u32::try_from(r.get::<_, i64>(3)?).map_err(|_| bad())?,
            object_key: r.get(4)?,
        });
    }
    Ok(out)
}

/// Those of `ids` the account has not indexed (in any state), at most
/// `limit`. Each batch is counted first and its rows are read only when
/// some are absent: handing 84,000 rows over from sqlx's worker thread
/// took 190 ms of an initial backup's commit.
async fn absent(
    conn: &mut sqlx::SqliteConnection,
    account_id: i64,
    ids: &[BlobId],
    limit: usize,
) -> Result<Vec<BlobId>, StoreError> {
    let mut out = Vec::new();
    for part in ids.chunks(BATCH) {
        if out.len() >= limit {
            break;
        }
        let sql = format!(
            "SELECT COUNT(*) FROM blobs WHERE account_id = ? AND id IN ({})",
            marks(part.len())
        );
        let mut q = sqlx::query_scalar::<_, i64>(&sql).bind(account_id);
        for id in part {
            q = q.bind(&id.0[..]);
        }
        // A repeated id makes the count fall short and the rows be read.
        if q.fetch_one(&mut *conn).await? as usize == part.len() {
            continue;
        }
        let present = blob_states(conn, account_id, part).await?;
        out.extend(part.iter().filter(|id| !present.contains_key(id)));
    }
    out.truncate(limit);
    Ok(out)
}

/// The tables that hold reference rows: what a snapshot adds to its base's
/// set (or its whole set, without a base), and what it drops from it.
const ADDS: &str = "snapshot_refs";
const DROPS: &str = "snapshot_unrefs";

/// Bytes the write-ahead log is cut back to after a checkpoint.
const JOURNAL_SIZE_LIMIT: u64 = 4 << 20;

/// The `refs_key` of a new snapshot. A key is never in use twice: a
/// deleted snapshot's rows go, or pass to its heir with their key, in the
/// transaction that deletes it.
const NEXT_REFS_KEY: &str = "(SELECT COALESCE(MAX(refs_key), 0) + 1 FROM snapshots)";

/// How many bases deep a chain may grow before a snapshot is stored whole:
/// reading a set reads its chain.
const MAX_DEPTH: usize = 64;

/// Adds `ids` to the rows in `table` of the snapshot whose `refs_key` is
/// `snap` (present ones are kept). A row names its blob by number: every
/// id must be indexed (commits and imports check first); one that is not
/// fails the statement instead of being left out.
async fn ids_insert(
    conn: &mut sqlx::SqliteConnection,
    table: &str,
    account_id: i64,
    snap: i64,
    ids: &[BlobId],
) -> Result<(), StoreError> {
    for part in ids.chunks(BATCH) {
        let sql = format!(
            "INSERT INTO {table} (snap, blob) VALUES {} ON CONFLICT DO NOTHING",
            vec!["(?, (SELECT no FROM blobs WHERE account_id = ? AND id = ?))"; part.len()]
                .join(", ")
        );
        let mut q = sqlx::query(&sql);
        for id in part {
            q = q.bind(snap).bind(account_id).bind(&id.0[..]);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Ids from `group_concat(hex(id), '')`, sorted.
fn hex_ids(joined: Option<String>) -> Result<Vec<BlobId>, StoreError> {
    let bytes = hex::decode(joined.unwrap_or_default())
        .map_err(|_| StoreError::Invalid("stored blob ids are not hex".into()))?;
    if bytes.len() % 32 != 0 {
        return Err(StoreError::Invalid(
            "stored blob id has a wrong length".into(),
        ));
    }
    let mut ids: Vec<BlobId> = bytes
        .chunks_exact(32)
        .map(blob_id)
        .collect::<Result<_, _>>()?;
    ids.sort_unstable();
    Ok(ids)
}

/// The `refs_key`s of a snapshot and of its chain of bases, ending with
/// the one stored whole; empty if the snapshot does not exist.
async fn chain(
    conn: &mut sqlx::SqliteConnection,
    account_id: i64,
    id: &str,
) -> Result<Vec<i64>, StoreError> {
    let ids: Vec<i64> = sqlx::query_scalar(
        "WITH RECURSIVE c(snap, base, depth) AS ( \
           SELECT refs_key, refs_base, 0 FROM snapshots WHERE account_id = ?1 AND id = ?2 \
           UNION ALL SELECT s.refs_key, s.refs_base, c.depth + 1 FROM snapshots s JOIN c \
           ON s.account_id = ?1 AND s.id = c.base WHERE c.depth <= ?3) \
         SELECT snap FROM c ORDER BY depth",
    )
    .bind(account_id)
    .bind(id)
    .bind(MAX_DEPTH as i64 * 2)
    .fetch_all(&mut *conn)
    .await?;
    if ids.len() > MAX_DEPTH * 2 {
        return Err(StoreError::Invalid(format!(
            "the references of backup {id} are stored against a chain of more than {} others",
            MAX_DEPTH * 2
        )));
    }
    Ok(ids)
}

/// The rows in `table` of each snapshot of `snapshots` (`refs_key`s, which
/// are unique across accounts), as blob ids, sorted.
async fn rows_of(
    conn: &mut sqlx::SqliteConnection,
    table: &str,
    snapshots: &[i64],
) -> Result<std::collections::HashMap<i64, Vec<BlobId>>, StoreError> {
    let mut out = std::collections::HashMap::new();
    if snapshots.is_empty() {
        return Ok(out);
    }
    // One row per snapshot holding every id: sqlx hands rows over from its
    // worker thread one at a time, which cost more than the query itself
    // for the 80,000 references of a large device.
    let sql = format!(
        "SELECT r.snap, group_concat(hex(b.id), '') FROM {table} r JOIN blobs b ON b.no = r.blob \
         WHERE r.snap IN ({}) GROUP BY r.snap",
        marks(snapshots.len())
    );
    let mut q = sqlx::query(&sql);
    for s in snapshots {
        q = q.bind(*s);
    }
    for row in q.fetch_all(&mut *conn).await? {
        out.insert(row.try_get(0)?, hex_ids(row.try_get(1)?)?);
    }
    Ok(out)
}

/// A snapshot's reference set as its rows and its chain's describe it.
#[derive(Default)]
struct StoredSet {
    /// Sorted, without repeats.
    ids: Vec<BlobId>,
    /// How many bases stand between it and the one stored whole.
    depth: usize,
    /// Rows of the differences along that chain.
    delta_rows: usize,
}

/// Reads a snapshot's whole reference set (empty if it does not exist).
async fn set_of(
    conn: &mut sqlx::SqliteConnection,
    account_id: i64,
    id: &str,
) -> Result<StoredSet, StoreError> {
    let chain = chain(conn, account_id, id).await?;
    let Some((root, deltas)) = chain.split_last() else {
        return Ok(StoredSet::default());
    };
    let mut adds = rows_of(conn, ADDS, &chain).await?;
    let mut drops = rows_of(conn, DROPS, deltas).await?;
    let mut out = StoredSet {
        ids: adds.remove(root).unwrap_or_default(),
        depth: deltas.len(),
        delta_rows: 0,
    };
    for s in deltas.iter().rev() {
        let added = adds.remove(s).unwrap_or_default();
        let removed = drops.remove(s).unwrap_or_default();
        out.delta_rows += added.len() + removed.len();
        out.ids = refset::apply(&out.ids, &removed, &added);
    }
    Ok(out)
}

/// Those of `ids` that the rows in `table` of snapshot `snap` hold.
async fn present_in(
    conn: &mut sqlx::SqliteConnection,
    table: &str,
    account_id: i64,
    snap: i64,
    ids: &[BlobId],
) -> Result<std::collections::HashSet<BlobId>, StoreError> {
    let mut out = std::collections::HashSet::new();
    for part in ids.chunks(BATCH) {
        let sql = format!(
            "SELECT b.id FROM {table} r JOIN blobs b ON b.no = r.blob \
             WHERE r.snap = ? AND b.account_id = ? AND b.id IN ({})",
            marks(part.len())
        );
        let mut q = sqlx::query_scalar::<_, Vec<u8>>(&sql)
            .bind(snap)
            .bind(account_id);
        for c in part {
            q = q.bind(&c.0[..]);
        }
        for b in q.fetch_all(&mut *conn).await? {
            out.insert(blob_id(&b)?);
        }
    }
    Ok(out)
}

/// Deletes the rows in `table` of snapshot `snap` that name one of `ids`.
async fn rows_delete(
    conn: &mut sqlx::SqliteConnection,
    table: &str,
    account_id: i64,
    snap: i64,
    ids: &[BlobId],
) -> Result<(), StoreError> {
    for part in ids.chunks(BATCH) {
        let sql = format!(
            "DELETE FROM {table} WHERE snap = ? AND blob IN \
             (SELECT no FROM blobs WHERE account_id = ? AND id IN ({}))",
            marks(part.len())
        );
        let mut q = sqlx::query(&sql).bind(snap).bind(account_id);
        for c in part {
            q = q.bind(&c.0[..]);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Those of `candidates` that a snapshot references, found in the rows of
/// its chain that name them: the nearest snapshot that names an id decides.
/// Two queries per 500 candidates, whatever the chain's depth.
async fn members(
    conn: &mut sqlx::SqliteConnection,
    account_id: i64,
    id: &str,
    candidates: &[BlobId],
) -> Result<Vec<BlobId>, StoreError> {
    let chain = chain(conn, account_id, id).await?;
    if chain.is_empty() || candidates.is_empty() {
        return Ok(Vec::new());
    }
    let level: std::collections::HashMap<i64, usize> =
        chain.iter().enumerate().map(|(i, k)| (*k, i)).collect();
    // Per id: the level of the nearest row naming it, and whether it adds.
    let mut nearest: std::collections::HashMap<BlobId, (usize, bool)> =
        std::collections::HashMap::new();
    for part in candidates.chunks(BATCH) {
        for table in [ADDS, DROPS] {
            let sql = format!(
                "SELECT r.snap, b.id FROM {table} r JOIN blobs b ON b.no = r.blob \
                 WHERE r.snap IN ({}) AND b.account_id = ? AND b.id IN ({})",
                marks(chain.len()),
                marks(part.len())
            );
            let mut q = sqlx::query_as::<_, (i64, Vec<u8>)>(&sql);
            for k in &chain {
                q = q.bind(*k);
            }
            q = q.bind(account_id);
            for c in part {
                q = q.bind(&c.0[..]);
            }
            for (snap, b) in q.fetch_all(&mut *conn).await? {
                let here = (
                    level.get(&snap).copied().unwrap_or(usize::MAX),
                    table == ADDS,
                );
                // Nearer wins; within one snapshot an add wins.
                nearest
                    .entry(blob_id(&b)?)
                    .and_modify(|n| {
                        if (here.0, !here.1) < (n.0, !n.1) {
                            *n = here;
                        }
                    })
                    .or_insert(here);
            }
        }
    }
    let mut found: Vec<BlobId> = nearest
        .into_iter()
        .filter(|(_, (_, adds))| *adds)
        .map(|(b, _)| b)
        .collect();
    found.sort_unstable();
    Ok(found)
}

/// Whether a set is better stored as its difference from a base's than
/// whole: the difference is small and reading it stays quick.
fn as_difference(base: &StoredSet, difference: usize, len: usize) -> bool {
    difference * 2 <= len && base.depth < MAX_DEPTH && base.delta_rows + difference <= len
}

/// Stores a snapshot's references, replacing its rows: as a difference
/// from `base` (a snapshot and its set) or whole.
/// What a snapshot's row holds when it is written: by a commit, or by
/// an import of a snapshot found in the packs.
struct SnapshotColumns<'a> {
    id: &'a str,
    device_id: i64,
    time: i64,
    files: u64,
    bytes: u64,
    snapshot_blob: &'a BlobId,
    parent: Option<&'a str>,
    client_version: &'a str,
    /// Blobs it references.
    blobs: usize,
    complete: bool,
    session: Option<&'a str>,
    partial: bool,
    categories: &'a str,
}

/// Adds a snapshot's row, created now, under a new `refs_key` (see
/// [`NEXT_REFS_KEY`]).
async fn insert_snapshot(
    conn: &mut sqlx::SqliteConnection,
    account_id: i64,
    s: &SnapshotColumns<'_>,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(&format!(
        "INSERT INTO snapshots (account_id, id, device_id, time, files, bytes, snapshot_blob, parent, \
         client_version, blobs, created, complete, session_id, partial, categories, refs_key) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, {NEXT_REFS_KEY})"
    ))
    .bind(account_id)
    .bind(s.id)
    .bind(s.device_id)
    .bind(s.time)
    .bind(s.files as i64)
    .bind(s.bytes as i64)
    .bind(&s.snapshot_blob.0[..])
    .bind(s.parent)
    .bind(s.client_version)
    .bind(s.blobs as i64)
    .bind(now)
    .bind(s.complete)
    .bind(s.session)
    .bind(s.partial)
    .bind(s.categories)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn store_refs(
    conn: &mut sqlx::SqliteConnection,
    account_id: i64,
    id: &str,
    base: Option<(&str, &[BlobId])>,
    set: &[BlobId],
) -> Result<(), StoreError> {
    let snap = key_of(conn, account_id, id)
        .await?
        .ok_or(StoreError::NotFound)?;
    clear_rows(conn, snap).await?;
    match base {
        Some((_, base_set)) => {
            let (dropped, added) = refset::differences(base_set, set);
            let dropped: Vec<BlobId> = dropped.into_iter().copied().collect();
            let added: Vec<BlobId> = added.into_iter().copied().collect();
            ids_insert(conn, ADDS, account_id, snap, &added).await?;
            ids_insert(conn, DROPS, account_id, snap, &dropped).await?;
        }
        None => ids_insert(conn, ADDS, account_id, snap, set).await?,
    }
    sqlx::query("UPDATE snapshots SET refs_base = ? WHERE account_id = ? AND id = ?")
        .bind(base.map(|(b, _)| b))
        .bind(account_id)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A snapshot's `refs_key`, which its reference rows carry.
async fn key_of(
    conn: &mut sqlx::SqliteConnection,
    account_id: i64,
    id: &str,
) -> Result<Option<i64>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT refs_key FROM snapshots WHERE account_id = ? AND id = ?")
            .bind(account_id)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?,
    )
}

/// Deletes every reference row of the snapshot whose `refs_key` is `snap`.
async fn clear_rows(conn: &mut sqlx::SqliteConnection, snap: i64) -> Result<(), StoreError> {
    for table in [ADDS, DROPS] {
        sqlx::query(&format!("DELETE FROM {table} WHERE snap = ?"))
            .bind(snap)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Deletes a snapshot and its rows. The newest of the snapshots stored
/// against it takes its rows over, changed by its own difference, and
/// stands against the deleted one's base: deleting costs that difference,
/// not a whole set. Any other dependent is stored again against the heir
/// (or whole).
async fn drop_snapshot(
    conn: &mut sqlx::SqliteConnection,
    account_id: i64,
    id: &str,
) -> Result<bool, StoreError> {
    let Some((key, base)) = sqlx::query_as::<_, (i64, Option<String>)>(
        "SELECT refs_key, refs_base FROM snapshots WHERE account_id = ? AND id = ?",
    )
    .bind(account_id)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(false);
    };
    let dependents: Vec<(String, i64)> = sqlx::query_as(
        "SELECT id, refs_key FROM snapshots WHERE account_id = ? AND refs_base = ? \
         ORDER BY complete DESC, created DESC, rowid DESC",
    )
    .bind(account_id)
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    // The other dependents' sets, read while their chains still hold.
    let mut others = Vec::new();
    for (o, _) in dependents.iter().skip(1) {
        others.push((o, set_of(conn, account_id, o).await?.ids));
    }
    sqlx::query("DELETE FROM snapshots WHERE account_id = ? AND id = ?")
        .bind(account_id)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    let Some((heir, heir_key)) = dependents.first() else {
        clear_rows(conn, key).await?;
        return Ok(true);
    };
    // The heir's set is the deleted one's less what the heir drops, plus
    // what it adds. Under the deleted one's key, against its base:
    // - a dropped id the deleted one added goes from the adds, any other
    //   joins the drops;
    // - an added id the deleted one dropped goes from the drops (it is in
    //   the base's set), any other joins the adds.
    let heir_adds = rows_of(conn, ADDS, &[*heir_key])
        .await?
        .remove(heir_key)
        .unwrap_or_default();
    let heir_drops = rows_of(conn, DROPS, &[*heir_key])
        .await?
        .remove(heir_key)
        .unwrap_or_default();
    let was_added = present_in(conn, ADDS, account_id, key, &heir_drops).await?;
    let was_dropped = present_in(conn, DROPS, account_id, key, &heir_adds).await?;
    let (unadd, drop): (Vec<BlobId>, Vec<BlobId>) =
        heir_drops.iter().partition(|b| was_added.contains(*b));
    let (undrop, add): (Vec<BlobId>, Vec<BlobId>) =
        heir_adds.iter().partition(|b| was_dropped.contains(*b));
    rows_delete(conn, ADDS, account_id, key, &unadd).await?;
    rows_delete(conn, DROPS, account_id, key, &undrop).await?;
    ids_insert(conn, ADDS, account_id, key, &add).await?;
    ids_insert(conn, DROPS, account_id, key, &drop).await?;
    clear_rows(conn, *heir_key).await?;
    sqlx::query("UPDATE snapshots SET refs_key = ?, refs_base = ? WHERE account_id = ? AND id = ?")
        .bind(key)
        .bind(&base)
        .bind(account_id)
        .bind(heir)
        .execute(&mut *conn)
        .await?;
    if !others.is_empty() {
        let heir_set = set_of(conn, account_id, heir).await?;
        for (o, set) in &others {
            let (dropped, added) = refset::differences(&heir_set.ids, set);
            let to = as_difference(&heir_set, dropped.len() + added.len(), set.len())
                .then_some((heir.as_str(), &heir_set.ids[..]));
            store_refs(conn, account_id, o, to, set).await?;
        }
    }
    Ok(true)
}

/// Fills in each row's count of damaged or missing blobs it references.
async fn with_damaged(
    conn: &mut sqlx::SqliteConnection,
    account_id: i64,
    mut rows: Vec<SnapshotRow>,
) -> Result<Vec<SnapshotRow>, StoreError> {
    let damaged = damaged_in(conn, account_id).await?;
    if !damaged.is_empty() {
        for row in &mut rows {
            row.damaged = members(conn, account_id, &row.id, &damaged).await?.len() as u64;
        }
    }
    Ok(rows)
}

async fn damaged_in(
    conn: &mut sqlx::SqliteConnection,
    account_id: i64,
) -> Result<Vec<BlobId>, StoreError> {
    let rows: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT id FROM blobs WHERE account_id = ? AND damaged <> 0")
            .bind(account_id)
            .fetch_all(&mut *conn)
            .await?;
    rows.iter().map(|r| blob_id(r)).collect()
}

async fn used_in(conn: &mut sqlx::SqliteConnection, account_id: i64) -> Result<u64, StoreError> {
    let v: i64 = sqlx::query_scalar(USED)
        .bind(account_id)
        .fetch_one(&mut *conn)
        .await?;
    Ok(v as u64)
}

async fn reserved_in(
    conn: &mut sqlx::SqliteConnection,
    account_id: i64,
    except_session: &str,
    now: i64,
) -> Result<u64, StoreError> {
    let v: i64 = sqlx::query_scalar(RESERVED)
        .bind(account_id)
        .bind(except_session)
        .bind(now - RESERVATION_SECS)
        .fetch_one(&mut *conn)
        .await?;
    Ok(v as u64)
}

/// Packs of the account (`?1`) uploaded under a session that is still open.
const OPEN_SESSION_PACKS: &str = "SELECT p.no FROM packs p JOIN sessions s ON s.account_id = p.account_id \
     AND s.id = p.session_id WHERE p.account_id = ?1 AND s.closed IS NULL";

/// The number under which the account's pack is indexed (blob rows name
/// their pack by it), if the pack is indexed.
async fn pack_no(
    conn: &mut sqlx::SqliteConnection,
    account_id: i64,
    pack: &PackId,
) -> Result<Option<i64>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT no FROM packs WHERE account_id = ? AND id = ?")
            .bind(account_id)
            .bind(&pack.0[..])
            .fetch_optional(&mut *conn)
            .await?,
    )
}

/// Indexes a pack (nothing if it already is) and returns its number.
async fn pack_add(
    conn: &mut sqlx::SqliteConnection,
    account_id: i64,
    pack: &PackId,
    object_key: &str,
    size: u64,
    session: Option<&str>,
    now: i64,
) -> Result<i64, StoreError> {
    sqlx::query(
        "INSERT OR IGNORE INTO packs (account_id, id, object_key, size, created, session_id) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(account_id)
    .bind(&pack.0[..])
    .bind(object_key)
    .bind(size as i64)
    .bind(now)
    .bind(session)
    .execute(&mut *conn)
    .await?;
    pack_no(conn, account_id, pack)
        .await?
        .ok_or_else(|| StoreError::Invalid("a pack just indexed is not in the index".into()))
}

const SNAPSHOT_SELECT: &str = "SELECT s.id, s.device_id, d.name AS device, s.time, s.files, s.bytes, \
     s.snapshot_blob, s.parent, s.client_version, s.blobs, s.complete, s.partial, s.categories, s.created \
     FROM snapshots s JOIN devices d ON d.id = s.device_id";

/// Keeps a connection for the pool only if it holds no transaction.
///
/// A request whose client goes away is dropped wherever it waits (hyper
/// cancels the handler). sqlx rolls back a dropped `Transaction`, but a
/// drop between SQLite's `BEGIN IMMEDIATE` and the moment sqlx hands out
/// the `Transaction` (sqlx-sqlite 0.8.6 awaits once more there) leaves the
/// connection in a transaction nothing will end, holding the write lock:
/// every later write then waits out the busy timeout and fails. Such a
/// connection is closed, which rolls the transaction back. So is one whose
/// dropped `Transaction` still has its rollback queued (after an error, a
/// cancellation, or the rare paths that end a transaction by dropping it,
/// such as a retried commit): reopening then costs little.
async fn release_check(conn: &mut sqlx::SqliteConnection) -> Result<bool, sqlx::Error> {
    use sqlx::Connection;
    if conn.is_in_transaction() {
        tracing::debug!("a connection was released inside a transaction; closing it");
        return Ok(false);
    }
    Ok(true)
}

impl SqliteMeta {
    /// Opens (creating and migrating) the database file.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with_cache(path, CACHE_IDS).await
    }

    /// Opens with a cache of recent reference sets of at most `ids` ids
    /// (0: every set is read from its rows; the tests check those).
    pub async fn open_with_cache(path: &Path, ids: usize) -> Result<Self, StoreError> {
        let url = format!("sqlite://{}", path.display());
        let opts = SqliteConnectOptions::from_str(&url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            // The write-ahead log keeps the size of its largest write
            // (19 MB after the benchmark's backups of 1.4 GB) unless cut
            // back after each checkpoint: that is disk the server holds.
            .pragma("journal_size_limit", JOURNAL_SIZE_LIMIT.to_string())
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            // A connection to a local file does not go stale; the check
            // cost a round trip to sqlx's worker thread per statement.
            .test_before_acquire(false)
            .after_release(|conn, _| Box::pin(release_check(conn)))
            .connect_with(opts)
            .await?;
        // Opened on first use, once the pool above has created and
        // migrated the file.
        let lookups = Arc::new(Lookups {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(tokio::sync::Semaphore::new(LOOKUP_CONNECTIONS)),
        });
        let me = SqliteMeta {
            pool,
            lookups,
            sets: Arc::new(Mutex::new(SetCache {
                capacity: ids,
                ..SetCache::default()
            })),
            clock: Clock::default(),
        };
        me.migrate().await?;
        Ok(me)
    }

    /// Stamps records with `clock` instead of the system's (tests move it).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, SetCache> {
        // The cache holds no invariant a panic could break halfway.
        self.sets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A snapshot's set, from the cache or read (not cached here: the
    /// caller's transaction may not commit).
    async fn set_in(
        &self,
        conn: &mut sqlx::SqliteConnection,
        account_id: i64,
        id: &str,
    ) -> Result<Arc<StoredSet>, StoreError> {
        if let Some(set) = self.cache().get(account_id, id) {
            return Ok(set);
        }
        Ok(Arc::new(set_of(conn, account_id, id).await?))
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let version: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&mut *tx)
            .await?;
        // A database migrated by a newer Haven has tables this code does
        // not know: every request would fail on them. Refuse to start.
        if version > MIGRATIONS.len() as i64 {
            return Err(StoreError::Invalid(format!(
                "the database has schema version {version}, and this version of Haven knows \
                 versions up to {}: a newer Haven has upgraded it. Run that newer version, or \
                 put back a copy of the database made before the upgrade",
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            sqlx::raw_sql(sql).execute(&mut *tx).await?;
            sqlx::raw_sql(&format!("PRAGMA user_version = {}", i + 1))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

#[async_trait]
impl MetaStore for SqliteMeta {
    async fn close(&self) -> Result<(), StoreError> {
        self.lookups.permits.close();
        self.lookups
            .idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.pool)
            .await?;
        // The last connection to close removes the emptied log.
        self.pool.close().await;
        Ok(())
    }

    async fn setting(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT value FROM settings WHERE key = ?")
                .bind(key)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn setting_init(&self, key: &str, value: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("INSERT OR IGNORE INTO settings (key, value) VALUES (?, ?)")
            .bind(key)
            .bind(value)
            .execute(&mut *tx)
            .await?;
        let v: Vec<u8> = sqlx::query_scalar("SELECT value FROM settings WHERE key = ?")
            .bind(key)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(v)
    }

    async fn invite_create(
        &self,
        code_hash: [u8; 32],
        email: Option<&str>,
        expires: i64,
        plan: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO invites (code_hash, email, created, expires, plan) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&code_hash[..])
        .bind(email)
        .bind(self.clock.now())
        .bind(expires)
        .bind(plan)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn account_create(
        &self,
        new: &NewAccount,
        invite_hash: Option<[u8; 32]>,
    ) -> Result<i64, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        // The invite first: a bad invite gets the same answer whether the
        // email has an account or not, so invite-only sign-up cannot be
        // used to find out which emails do.
        if let Some(hash) = invite_hash {
            let valid: Option<i64> = sqlx::query_scalar(
                "SELECT 1 FROM invites WHERE code_hash = ? AND used_by IS NULL AND expires > ? \
                 AND (email IS NULL OR email = ?)",
            )
            .bind(&hash[..])
            .bind(self.clock.now())
            .bind(&new.email)
            .fetch_optional(&mut *tx)
            .await?;
            if valid.is_none() {
                return Err(StoreError::Conflict(INVITE_INVALID));
            }
        }
        let taken: Option<i64> = sqlx::query_scalar("SELECT id FROM accounts WHERE email = ?")
            .bind(&new.email)
            .fetch_optional(&mut *tx)
            .await?;
        if taken.is_some() {
            return Err(StoreError::Conflict(EMAIL_TAKEN));
        }
        let first: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM accounts")
            .fetch_one(&mut *tx)
            .await?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO accounts (email, kdf, auth_hash, wrapped_key, recovery_auth_hash, \
             recovery_wrapped_key, is_admin, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(&new.email)
        .bind(&new.kdf)
        .bind(&new.auth_hash[..])
        .bind(&new.wrapped_key)
        .bind(&new.recovery_auth_hash[..])
        .bind(&new.recovery_wrapped_key)
        .bind(first == 0) // the first account administers the server
        .bind(self.clock.now())
        .fetch_one(&mut *tx)
        .await?;
        if let Some(hash) = invite_hash {
            let used = sqlx::query(
                "UPDATE invites SET used_by = ? WHERE code_hash = ? AND used_by IS NULL \
                 AND expires > ? AND (email IS NULL OR email = ?)",
            )
            .bind(id)
            .bind(&hash[..])
            .bind(self.clock.now())
            .bind(&new.email)
            .execute(&mut *tx)
            .await?;
            if used.rows_affected() != 1 {
                return Err(StoreError::Conflict(INVITE_INVALID));
            }
            // The plan the operator chose for this invite.
            sqlx::query(
                "UPDATE accounts SET plan = (SELECT plan FROM invites WHERE code_hash = ?) WHERE id = ?",
            )
            .bind(&hash[..])
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    async fn account_by_email(&self, email: &str) -> Result<Option<Account>, StoreError> {
        let row = sqlx::query(&format!("{ACCOUNT_SELECT} WHERE email = ?"))
            .bind(email)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(account_row).transpose()
    }

    async fn account(&self, account_id: i64) -> Result<Option<Account>, StoreError> {
        let row = sqlx::query(&format!("{ACCOUNT_SELECT} WHERE id = ?"))
            .bind(account_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(account_row).transpose()
    }

    async fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        let rows = sqlx::query(&format!("{ACCOUNT_SELECT} ORDER BY email"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(account_row).collect()
    }

    async fn account_set_plan(
        &self,
        account_id: i64,
        plan: Option<&str>,
    ) -> Result<(), StoreError> {
        let n = sqlx::query("UPDATE accounts SET plan = ? WHERE id = ?")
            .bind(plan)
            .bind(account_id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        if n == 1 {
            Ok(())
        } else {
            Err(StoreError::NotFound)
        }
    }

    async fn account_dictionary(&self, account_id: i64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT dictionary FROM accounts WHERE id = ?")
                .bind(account_id)
                .fetch_optional(&self.pool)
                .await?
                .flatten(),
        )
    }

    async fn account_dictionary_init(
        &self,
        account_id: i64,
        sealed: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        sqlx::query("UPDATE accounts SET dictionary = ? WHERE id = ? AND dictionary IS NULL")
            .bind(sealed)
            .bind(account_id)
            .execute(&self.pool)
            .await?;
        self.account_dictionary(account_id)
            .await?
            .ok_or(StoreError::NotFound)
    }

    async fn account_set_password(
        &self,
        account_id: i64,
        kdf: &str,
        auth_hash: [u8; 32],
        wrapped_key: &[u8],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("UPDATE accounts SET kdf = ?, auth_hash = ?, wrapped_key = ? WHERE id = ?")
            .bind(kdf)
            .bind(&auth_hash[..])
            .bind(wrapped_key)
            .bind(account_id)
            .execute(&mut *tx)
            .await?;
        // A new password signs every browser out: whoever knew the old one
        // must not keep a working session or link.
        for table in ["console_sessions", "console_links"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE account_id = ?"))
                .bind(account_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn device_upsert(
        &self,
        account_id: i64,
        name: &str,
    ) -> Result<(Device, bool), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let (count, exists): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COALESCE(SUM(name = ?), 0) FROM devices WHERE account_id = ?",
        )
        .bind(name)
        .bind(account_id)
        .fetch_one(&mut *tx)
        .await?;
        if exists == 0 && count >= MAX_DEVICES {
            return Err(StoreError::Conflict(TOO_MANY_DEVICES));
        }
        let inserted = sqlx::query(
            "INSERT OR IGNORE INTO devices (account_id, name, created) VALUES (?, ?, ?)",
        )
        .bind(account_id)
        .bind(name)
        .bind(self.clock.now())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let r = sqlx::query("SELECT id, created FROM devices WHERE account_id = ? AND name = ?")
            .bind(account_id)
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        let dev = Device {
            id: r.try_get("id")?,
            account_id,
            name: name.to_string(),
            created: r.try_get("created")?,
            ..Device::default()
        };
        Ok((dev, inserted == 0))
    }

    async fn devices(&self, account_id: i64) -> Result<Vec<Device>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.id, d.name, d.created, d.last_seen, (SELECT MAX(created) FROM snapshots s \
             WHERE s.account_id = d.account_id AND s.device_id = d.id) AS last_backup, \
             EXISTS (SELECT 1 FROM tokens t WHERE t.device_id = d.id) AS signed_in \
             FROM devices d WHERE d.account_id = ? ORDER BY d.name",
        )
        .bind(account_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Device {
                    id: r.try_get("id")?,
                    account_id,
                    name: r.try_get("name")?,
                    created: r.try_get("created")?,
                    last_backup: r.try_get("last_backup")?,
                    last_seen: r.try_get("last_seen")?,
                    signed_in: r.try_get("signed_in")?,
                })
            })
            .collect()
    }

    async fn token_create(
        &self,
        hash: [u8; 32],
        account_id: i64,
        device_id: i64,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        sqlx::query(
            "INSERT INTO tokens (hash, account_id, device_id, created, last_used) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&hash[..])
        .bind(account_id)
        .bind(device_id)
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn token_lookup(&self, hash: [u8; 32]) -> Result<Option<TokenRow>, StoreError> {
        use rusqlite::OptionalExtension;
        self.lookups
            .run(move |c| {
                let mut q = c.prepare_cached(
                    "SELECT account_id, device_id, last_used FROM tokens WHERE hash = ?1",
                )?;
                Ok(q.query_row([&hash[..]], |r| {
                    Ok(TokenRow {
                        account_id: r.get(0)?,
                        device_id: r.get(1)?,
                        last_used: r.get(2)?,
                    })
                })
                .optional()?)
            })
            .await
    }

    async fn token_touch(
        &self,
        hash: [u8; 32],
        device_id: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("UPDATE tokens SET last_used = ? WHERE hash = ?")
            .bind(now)
            .bind(&hash[..])
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE devices SET last_seen = ? WHERE id = ?")
            .bind(now)
            .bind(device_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn tokens_revoke(
        &self,
        account_id: i64,
        scope: TokenScope,
        reason: &str,
    ) -> Result<Vec<[u8; 32]>, StoreError> {
        let (filter, device) = match scope {
            TokenScope::Device(d) => ("device_id = ?", d),
            TokenScope::AllExcept(Some(d)) => ("device_id <> ?", d),
            TokenScope::AllExcept(None) => ("? IS NOT NULL", 0),
        };
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let hashes: Vec<Vec<u8>> = sqlx::query_scalar(&format!(
            "SELECT hash FROM tokens WHERE account_id = ? AND {filter}"
        ))
        .bind(account_id)
        .bind(device)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query(&format!(
            "INSERT OR REPLACE INTO revoked_tokens (hash, account_id, device_id, revoked, reason) \
             SELECT hash, account_id, device_id, ?, ? FROM tokens WHERE account_id = ? AND {filter}"
        ))
        .bind(self.clock.now())
        .bind(reason)
        .bind(account_id)
        .bind(device)
        .execute(&mut *tx)
        .await?;
        sqlx::query(&format!(
            "DELETE FROM tokens WHERE account_id = ? AND {filter}"
        ))
        .bind(account_id)
        .bind(device)
        .execute(&mut *tx)
        .await?;
        // The reasons are kept for the account's newest revocations only:
        // signing in again and again must not grow the table.
        sqlx::query(
            "DELETE FROM revoked_tokens WHERE account_id = ? AND rowid NOT IN \
             (SELECT rowid FROM revoked_tokens WHERE account_id = ? ORDER BY rowid DESC LIMIT ?)",
        )
        .bind(account_id)
        .bind(account_id)
        .bind(MAX_REVOKED)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(hashes
            .into_iter()
            .filter_map(|h| <[u8; 32]>::try_from(h).ok())
            .collect())
    }

    async fn tokens_expire(&self, unused_since: i64) -> Result<Vec<(i64, [u8; 32])>, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let rows = sqlx::query("SELECT account_id, hash FROM tokens WHERE last_used < ?")
            .bind(unused_since)
            .fetch_all(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT OR REPLACE INTO revoked_tokens (hash, account_id, device_id, revoked, reason) \
             SELECT hash, account_id, device_id, ?, 'expired' FROM tokens WHERE last_used < ?",
        )
        .bind(self.clock.now())
        .bind(unused_since)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM tokens WHERE last_used < ?")
            .bind(unused_since)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let hash: Vec<u8> = r.try_get("hash")?;
            if let Ok(h) = <[u8; 32]>::try_from(hash) {
                out.push((r.try_get("account_id")?, h));
            }
        }
        Ok(out)
    }

    async fn token_revoked(&self, hash: [u8; 32]) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT reason FROM revoked_tokens WHERE hash = ?")
                .bind(&hash[..])
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn blobs_missing(
        &self,
        account_id: i64,
        ids: &[BlobId],
    ) -> Result<Vec<BlobId>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let states = blob_states(&mut conn, account_id, ids).await?;
        Ok(ids
            .iter()
            .filter(|id| states.get(id) != Some(&0))
            .copied()
            .collect())
    }

    async fn pack_insert(
        &self,
        account_id: i64,
        pack: PackId,
        object_key: &str,
        size: u64,
        blobs: &[PackBlob],
        session: Option<&str>,
        quota: Option<u64>,
    ) -> Result<u32, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let used_before = match quota {
            Some(_) => used_in(&mut tx, account_id).await?,
            None => 0,
        };
        let no = pack_add(
            &mut tx,
            account_id,
            &pack,
            object_key,
            size,
            session,
            self.clock.now(),
        )
        .await?;
        let mut dup = 0;
        let mut new_bytes = 0u64;
        let ids: Vec<BlobId> = blobs.iter().map(|b| b.id).collect();
        let mut states = blob_states(&mut tx, account_id, &ids).await?;
        let mut new = Vec::new();
        for b in blobs {
            match states.insert(b.id, 0) {
                None => {
                    new_bytes += b.length as u64;
                    new.push(b);
                }
                Some(0) => dup += 1,
                // Scrub found the stored copy damaged or missing: this one heals it.
                Some(_) => {
                    sqlx::query(
                        "UPDATE blobs SET kind = ?, pack = ?, offset = ?, length = ?, hash = ?, damaged = 0 \
                         WHERE account_id = ? AND id = ?",
                    )
                    .bind(b.kind as u8 as i64)
                    .bind(no)
                    .bind(b.offset as i64)
                    .bind(b.length as i64)
                    .bind(&b.hash[..STORED_HASH_LEN])
                    .bind(account_id)
                    .bind(&b.id.0[..])
                    .execute(&mut *tx)
                    .await?;
                }
            }
        }
        // In key order, the inserts walk the index once instead of jumping
        // to a random page per row (sqlite3 shell, 20 transactions of 4,200
        // random ids: 1.73-1.78 s in arrival order, 1.15-1.22 s sorted).
        new.sort_unstable_by_key(|b| b.id);
        for part in new.chunks(BATCH) {
            let sql = format!(
                "INSERT INTO blobs (kind, pack, offset, length, hash, account_id, id) VALUES {}",
                rows(part.len(), 7)
            );
            let mut q = sqlx::query(&sql);
            for b in part {
                q = q
                    .bind(b.kind as u8 as i64)
                    .bind(no)
                    .bind(b.offset as i64)
                    .bind(b.length as i64)
                    .bind(&b.hash[..STORED_HASH_LEN])
                    .bind(account_id)
                    .bind(&b.id.0[..]);
            }
            q.execute(&mut *tx).await?;
        }
        if let Some(q) = quota
            && new_bytes > 0
        {
            let others =
                reserved_in(&mut tx, account_id, session.unwrap_or(""), self.clock.now()).await?;
            let available = q.saturating_sub(used_before + others);
            if new_bytes > available {
                // Dropping the transaction indexes nothing.
                return Err(StoreError::QuotaExceeded {
                    needed: new_bytes,
                    available,
                });
            }
        }
        tx.commit().await?;
        Ok(dup)
    }

    async fn session_open(
        &self,
        account_id: i64,
        device_id: i64,
        resume: Option<&str>,
        reserve: Option<u64>,
        quota: Option<u64>,
    ) -> Result<SessionInfo, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut id = None;
        if let Some(r) = resume {
            let n = sqlx::query(
                "UPDATE sessions SET last_active = ? WHERE account_id = ? AND id = ? AND device_id = ? AND closed IS NULL",
            )
            .bind(self.clock.now())
            .bind(account_id)
            .bind(r)
            .bind(device_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 1 {
                id = Some(r.to_string());
            }
        }
        let id = match id {
            Some(id) => id,
            None => {
                let id = hex::encode(rand::random::<[u8; 16]>());
                sqlx::query("INSERT INTO sessions (account_id, id, device_id, created, last_active) VALUES (?, ?, ?, ?, ?)")
                    .bind(account_id)
                    .bind(&id)
                    .bind(device_id)
                    .bind(self.clock.now())
                    .bind(self.clock.now())
                    .execute(&mut *tx)
                    .await?;
                id
            }
        };
        let available = match quota {
            Some(q) => {
                let used = used_in(&mut tx, account_id).await?;
                let others = reserved_in(&mut tx, account_id, &id, self.clock.now()).await?;
                Some(q.saturating_sub(used + others))
            }
            None => None,
        };
        if let Some(r) = reserve {
            if let Some(a) = available
                && r > a
            {
                return Err(StoreError::QuotaExceeded {
                    needed: r,
                    available: a,
                });
            }
            // The session's own uploads count against its reservation.
            let stored: i64 = sqlx::query_scalar(
                "SELECT COALESCE(SUM(b.length), 0) FROM packs p JOIN blobs b ON b.pack = p.no \
                 WHERE p.account_id = ? AND p.session_id = ?",
            )
            .bind(account_id)
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query("UPDATE sessions SET reserved = ? WHERE account_id = ? AND id = ?")
                .bind(r.saturating_add(stored as u64).min(i64::MAX as u64) as i64)
                .bind(account_id)
                .bind(&id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(SessionInfo { id, available })
    }

    async fn session_touch(&self, account_id: i64, session: &str) -> Result<bool, StoreError> {
        let n = sqlx::query("UPDATE sessions SET last_active = ? WHERE account_id = ? AND id = ? AND closed IS NULL")
            .bind(self.clock.now())
            .bind(account_id)
            .bind(session)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    async fn pack_exists(&self, account_id: i64, pack: PackId) -> Result<bool, StoreError> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM packs WHERE account_id = ? AND id = ?")
                .bind(account_id)
                .bind(&pack.0[..])
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }

    async fn blob_locations(
        &self,
        account_id: i64,
        ids: &[BlobId],
    ) -> Result<Vec<Option<BlobLocation>>, StoreError> {
        let ids = ids.to_vec();
        self.lookups.run(move |c| locate(c, account_id, &ids)).await
    }

    async fn snapshot_commit(&self, new: &NewSnapshot) -> Result<SnapshotRow, StoreError> {
        let a = new.account_id;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let used_before = match new.quota {
            Some(_) => used_in(&mut tx, a).await?,
            None => 0,
        };
        let existing = sqlx::query(&format!(
            "{SNAPSHOT_SELECT} WHERE s.account_id = ? AND s.id = ?"
        ))
        .bind(a)
        .bind(&new.id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(r) = existing {
            // A retried commit whose first answer was lost.
            let rows = with_damaged(&mut tx, a, vec![snapshot_row(&r)?]).await?;
            return rows.into_iter().next().ok_or(StoreError::NotFound);
        }
        // The parent's set, then the new one: the parent's less `removed`,
        // plus `added` and the snapshot blob.
        let mut base = None;
        let parent_set = match &new.parent {
            Some(parent) => {
                let device: Option<i64> = sqlx::query_scalar(
                    "SELECT device_id FROM snapshots WHERE account_id = ? AND id = ?",
                )
                .bind(a)
                .bind(parent)
                .fetch_optional(&mut *tx)
                .await?;
                // The parent was deleted meanwhile: the client resends the whole set.
                let device = device.ok_or(StoreError::NotFound)?;
                // Stored against a snapshot of the same device only, so
                // that what a device's snapshots hold is in its own rows.
                if device == new.device_id {
                    base = Some(parent.as_str());
                }
                self.set_in(&mut tx, a, parent).await?
            }
            None => Arc::default(),
        };
        let mut added = new.added.clone();
        added.push(new.snapshot_blob);
        let set = refset::apply(
            &parent_set.ids,
            &refset::normalize(new.removed.clone()),
            &refset::normalize(added),
        );
        let (dropped, fresh) = refset::differences(&parent_set.ids, &set);
        // Invariant 1: nothing is visible unless all it references is
        // stored. What came from the parent is: the parent holds it, so GC
        // kept it, and this transaction found the parent. Only what is new
        // is looked up, so a commit costs what changed, not the size of
        // the tree.
        let fresh: Vec<BlobId> = fresh.into_iter().copied().collect();
        let missing = absent(&mut tx, a, &fresh, 1000).await?;
        if !missing.is_empty() {
            return Err(StoreError::BlobsMissing(missing));
        }
        let difference = dropped.len() + fresh.len();
        let base = base.filter(|_| as_difference(&parent_set, difference, set.len()));
        let columns = SnapshotColumns {
            id: &new.id,
            device_id: new.device_id,
            time: new.time,
            files: new.files,
            bytes: new.bytes,
            snapshot_blob: &new.snapshot_blob,
            parent: new.parent.as_deref(),
            client_version: &new.client_version,
            blobs: set.len(),
            complete: new.complete,
            session: new.session.as_deref(),
            partial: new.partial,
            categories: &new.categories,
        };
        insert_snapshot(&mut tx, a, &columns, self.clock.now()).await?;
        store_refs(
            &mut tx,
            a,
            &new.id,
            base.map(|b| (b, &parent_set.ids[..])),
            &set,
        )
        .await?;
        // A snapshot supersedes the device's earlier checkpoints (of this
        // run or of runs that never finished): each holds everything the
        // one before held. The newest goes first, so a chain of them is
        // folded into the snapshot one difference at a time.
        let checkpoints: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM snapshots WHERE account_id = ? AND device_id = ? AND complete = 0 \
             AND id <> ? ORDER BY created DESC, rowid DESC",
        )
        .bind(a)
        .bind(new.device_id)
        .bind(&new.id)
        .fetch_all(&mut *tx)
        .await?;
        for c in &checkpoints {
            drop_snapshot(&mut tx, a, c).await?;
        }
        if let Some(session) = new.session.as_ref().filter(|_| new.complete) {
            sqlx::query("UPDATE sessions SET closed = ? WHERE account_id = ? AND id = ?")
                .bind(self.clock.now())
                .bind(a)
                .bind(session)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(q) = new.quota {
            // Blobs no backup referenced any more (deleted, not yet collected)
            // count again once a backup references them.
            let used_after = used_in(&mut tx, a).await?;
            if used_after > used_before && used_after > q {
                return Err(StoreError::QuotaExceeded {
                    needed: used_after - used_before,
                    available: q.saturating_sub(used_before),
                });
            }
        }
        let r = sqlx::query(&format!(
            "{SNAPSHOT_SELECT} WHERE s.account_id = ? AND s.id = ?"
        ))
        .bind(a)
        .bind(&new.id)
        .fetch_one(&mut *tx)
        .await?;
        let row = with_damaged(&mut tx, a, vec![snapshot_row(&r)?]).await?;
        tx.commit().await?;
        if !checkpoints.is_empty() {
            // Dropped snapshots go, and the rows of their heirs changed.
            self.cache().forget(|account, _| account == a);
        }
        let stored = match base {
            Some(_) => StoredSet {
                ids: set,
                depth: parent_set.depth + 1,
                delta_rows: parent_set.delta_rows + difference,
            },
            None => StoredSet {
                ids: set,
                ..StoredSet::default()
            },
        };
        self.cache().put(a, &new.id, Arc::new(stored));
        row.into_iter().next().ok_or(StoreError::NotFound)
    }

    async fn snapshots(
        &self,
        account_id: i64,
        device_id: Option<i64>,
    ) -> Result<Vec<SnapshotRow>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(&format!(
            "{SNAPSHOT_SELECT} WHERE s.account_id = ? AND (? IS NULL OR s.device_id = ?) \
             ORDER BY s.time DESC, s.rowid DESC"
        ))
        .bind(account_id)
        .bind(device_id)
        .bind(device_id)
        .fetch_all(&mut *tx)
        .await?;
        let rows = rows.iter().map(snapshot_row).collect::<Result<_, _>>()?;
        let rows = with_damaged(&mut tx, account_id, rows).await?;
        tx.commit().await?;
        Ok(rows)
    }

    async fn snapshot(&self, account_id: i64, id: &str) -> Result<Option<SnapshotRow>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let r = sqlx::query(&format!(
            "{SNAPSHOT_SELECT} WHERE s.account_id = ? AND s.id = ?"
        ))
        .bind(account_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let rows = r
            .as_ref()
            .map(snapshot_row)
            .transpose()?
            .into_iter()
            .collect();
        let row = with_damaged(&mut tx, account_id, rows).await?.pop();
        tx.commit().await?;
        Ok(row)
    }

    async fn used(&self, account_id: i64) -> Result<u64, StoreError> {
        let mut conn = self.pool.acquire().await?;
        used_in(&mut conn, account_id).await
    }

    async fn usage(&self, account_id: i64) -> Result<Usage, StoreError> {
        let mut tx = self.pool.begin().await?;
        let used = used_in(&mut tx, account_id).await?;
        let reserved = reserved_in(&mut tx, account_id, "", self.clock.now()).await?;
        let physical: i64 =
            sqlx::query_scalar("SELECT COALESCE(SUM(size), 0) FROM packs WHERE account_id = ?")
                .bind(account_id)
                .fetch_one(&mut *tx)
                .await?;
        let rows = sqlx::query(
            "SELECT d.name AS name, COALESCE(SUM(b.length), 0) AS bytes FROM devices d \
             LEFT JOIN (SELECT DISTINCT s.device_id AS device_id, r.blob AS blob FROM snapshot_refs r \
                        JOIN snapshots s ON s.refs_key = r.snap \
                        WHERE s.account_id = ?1) u ON u.device_id = d.id \
             LEFT JOIN blobs b ON b.no = u.blob \
             WHERE d.account_id = ?1 GROUP BY d.id ORDER BY d.name",
        )
        .bind(account_id)
        .fetch_all(&mut *tx)
        .await?;
        let devices = rows
            .iter()
            .map(|r| {
                Ok((
                    r.try_get::<String, _>("name")?,
                    r.try_get::<i64, _>("bytes")? as u64,
                ))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let rows = sqlx::query(
            "SELECT d.name AS name, (SELECT s.categories FROM snapshots s WHERE s.account_id = d.account_id \
             AND s.device_id = d.id AND s.complete = 1 ORDER BY s.time DESC, s.rowid DESC LIMIT 1) AS categories \
             FROM devices d WHERE d.account_id = ? ORDER BY d.name",
        )
        .bind(account_id)
        .fetch_all(&mut *tx)
        .await?;
        let mut categories = Vec::new();
        for r in &rows {
            if let Some(c) = r.try_get::<Option<String>, _>("categories")? {
                categories.push((r.try_get::<String, _>("name")?, c));
            }
        }
        tx.commit().await?;
        Ok(Usage {
            used,
            stored_physical: physical as u64,
            devices,
            reserved,
            categories,
        })
    }

    async fn freed_if_deleted(&self, account_id: i64, id: &str) -> Result<u64, StoreError> {
        let freed: i64 = sqlx::query_scalar(&format!(
            "SELECT COALESCE(SUM(b.length), 0) FROM snapshot_refs r \
             JOIN blobs b ON b.no = r.blob \
             WHERE r.snap = (SELECT refs_key FROM snapshots WHERE account_id = ?1 AND id = ?2) \
             AND NOT EXISTS (SELECT 1 FROM snapshot_refs o WHERE o.blob = r.blob AND o.snap <> r.snap) \
             AND NOT EXISTS (SELECT 1 FROM snapshots c WHERE c.account_id = ?1 AND c.refs_base = ?2 \
                             AND NOT EXISTS (SELECT 1 FROM snapshot_unrefs u \
                                             WHERE u.snap = c.refs_key AND u.blob = r.blob)) \
             AND b.pack NOT IN ({OPEN_SESSION_PACKS})"
        ))
        .bind(account_id)
        .bind(id)
        .fetch_one(&self.pool)
        .await?;
        Ok(freed as u64)
    }

    async fn snapshot_delete(&self, account_id: i64, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let found = drop_snapshot(&mut tx, account_id, id).await?;
        tx.commit().await?;
        self.cache().forget(|a, _| a == account_id);
        Ok(found)
    }

    async fn categories(
        &self,
        account_id: i64,
        device_id: i64,
    ) -> Result<Vec<CategoryRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, enabled, files, bytes, new_bytes, scanned FROM device_categories \
             WHERE account_id = ? AND device_id = ? ORDER BY name",
        )
        .bind(account_id)
        .bind(device_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(CategoryRow {
                    name: r.try_get("name")?,
                    enabled: r.try_get("enabled")?,
                    files: r.try_get::<i64, _>("files")? as u64,
                    bytes: r.try_get::<i64, _>("bytes")? as u64,
                    new_bytes: r.try_get::<i64, _>("new_bytes")? as u64,
                    scanned: r.try_get("scanned")?,
                })
            })
            .collect()
    }

    async fn category_set(
        &self,
        account_id: i64,
        device_id: i64,
        name: &str,
        enabled: bool,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let (count, exists): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*), COALESCE(SUM(name = ?), 0) FROM device_categories \
             WHERE account_id = ? AND device_id = ?",
        )
        .bind(name)
        .bind(account_id)
        .bind(device_id)
        .fetch_one(&mut *tx)
        .await?;
        if exists == 0 && count >= MAX_CATEGORIES {
            return Err(StoreError::Conflict(TOO_MANY_CATEGORIES));
        }
        sqlx::query(
            "INSERT INTO device_categories (account_id, device_id, name, enabled) VALUES (?, ?, ?, ?) \
             ON CONFLICT (account_id, device_id, name) DO UPDATE SET enabled = excluded.enabled",
        )
        .bind(account_id)
        .bind(device_id)
        .bind(name)
        .bind(enabled)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn categories_scanned(
        &self,
        account_id: i64,
        device_id: i64,
        rows: &[CategoryRow],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let now = self.clock.now();
        // A category the scan no longer has is forgotten unless it is
        // switched off (that switch is the user's): rows stay bounded by
        // the scan's 256 and the switches.
        let on: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM device_categories WHERE account_id = ? AND device_id = ? AND enabled",
        )
        .bind(account_id)
        .bind(device_id)
        .fetch_all(&mut *tx)
        .await?;
        for gone in on.iter().filter(|n| !rows.iter().any(|r| &r.name == *n)) {
            sqlx::query(
                "DELETE FROM device_categories WHERE account_id = ? AND device_id = ? AND name = ?",
            )
            .bind(account_id)
            .bind(device_id)
            .bind(gone)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "UPDATE device_categories SET files = 0, bytes = 0, new_bytes = 0, scanned = ? \
             WHERE account_id = ? AND device_id = ?",
        )
        .bind(now)
        .bind(account_id)
        .bind(device_id)
        .execute(&mut *tx)
        .await?;
        for r in rows {
            sqlx::query(
                "INSERT INTO device_categories (account_id, device_id, name, files, bytes, new_bytes, scanned) \
                 VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (account_id, device_id, name) DO UPDATE SET \
                 files = excluded.files, bytes = excluded.bytes, new_bytes = excluded.new_bytes, scanned = excluded.scanned",
            )
            .bind(account_id)
            .bind(device_id)
            .bind(&r.name)
            .bind(r.files as i64)
            .bind(r.bytes as i64)
            .bind(r.new_bytes as i64)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn auth_attempt(
        &self,
        keys: &[String],
        now: i64,
        since: i64,
        max: u32,
    ) -> Result<AuthAttempt, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("DELETE FROM auth_failures WHERE at < ?")
            .bind(since)
            .execute(&mut *tx)
            .await?;
        for k in keys {
            let (n, oldest): (i64, Option<i64>) =
                sqlx::query_as("SELECT COUNT(*), MIN(at) FROM auth_failures WHERE key = ?")
                    .bind(k)
                    .fetch_one(&mut *tx)
                    .await?;
            if n >= i64::from(max) {
                return Ok(AuthAttempt::Limited {
                    failures: n as u32,
                    oldest: oldest.unwrap_or(now),
                });
            }
        }
        let mut rows = Vec::with_capacity(keys.len());
        for k in keys {
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO auth_failures (key, at) VALUES (?, ?) RETURNING rowid",
            )
            .bind(k)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            rows.push(id);
        }
        tx.commit().await?;
        Ok(AuthAttempt::Counted(rows))
    }

    async fn auth_attempt_succeeded(&self, rows: &[i64]) -> Result<(), StoreError> {
        for id in rows {
            sqlx::query("DELETE FROM auth_failures WHERE rowid = ?")
                .bind(id)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    async fn attempt_add(
        &self,
        account_id: i64,
        device_id: i64,
        a: &AttemptRow,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO attempts (account_id, device_id, started, finished, result, code, message, fix, \
             snapshot_id, uploaded, received) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(account_id)
        .bind(device_id)
        .bind(a.started)
        .bind(a.finished)
        .bind(&a.result)
        .bind(&a.code)
        .bind(&a.message)
        .bind(&a.fix)
        .bind(&a.snapshot)
        .bind(a.uploaded as i64)
        .bind(a.received)
        .execute(&self.pool)
        .await?;
        // The device's newest attempts are kept, the rest forgotten.
        sqlx::query(
            "DELETE FROM attempts WHERE account_id = ? AND device_id = ? AND id <= \
             (SELECT id FROM attempts WHERE account_id = ? AND device_id = ? \
              ORDER BY id DESC LIMIT 1 OFFSET ?)",
        )
        .bind(account_id)
        .bind(device_id)
        .bind(account_id)
        .bind(device_id)
        .bind(MAX_ATTEMPTS)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn attempts(
        &self,
        account_id: i64,
        device_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AttemptRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.name AS device, a.started, a.finished, a.result, a.code, a.message, a.fix, \
             a.snapshot_id, a.uploaded, a.received FROM attempts a JOIN devices d ON d.id = a.device_id \
             WHERE a.account_id = ? AND (? IS NULL OR a.device_id = ?) \
             ORDER BY a.finished DESC, a.id DESC LIMIT ?",
        )
        .bind(account_id)
        .bind(device_id)
        .bind(device_id)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AttemptRow {
                    device: r.try_get("device")?,
                    started: r.try_get("started")?,
                    finished: r.try_get("finished")?,
                    result: r.try_get("result")?,
                    code: r.try_get("code")?,
                    message: r.try_get("message")?,
                    fix: r.try_get("fix")?,
                    snapshot: r.try_get("snapshot_id")?,
                    uploaded: r.try_get::<i64, _>("uploaded")? as u64,
                    received: r.try_get("received")?,
                })
            })
            .collect()
    }

    async fn snapshot_refs(&self, account_id: i64, id: &str) -> Result<Vec<BlobId>, StoreError> {
        // One read transaction: a chain is read as one state of it.
        let generation = self.cache().generation;
        let mut tx = self.pool.begin().await?;
        let set = self.set_in(&mut tx, account_id, id).await?;
        tx.commit().await?;
        let mut cache = self.cache();
        if !set.ids.is_empty() && cache.generation == generation {
            cache.put(account_id, id, set.clone());
        }
        Ok(set.ids.clone())
    }

    async fn import_account(&self, a: &Account) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO accounts (id, email, kdf, auth_hash, wrapped_key, recovery_auth_hash, \
             recovery_wrapped_key, is_admin, created, plan) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(a.id)
        .bind(&a.email)
        .bind(&a.kdf)
        .bind(&a.auth_hash)
        .bind(&a.wrapped_key)
        .bind(&a.recovery_auth_hash)
        .bind(&a.recovery_wrapped_key)
        .bind(a.is_admin)
        .bind(a.created)
        .bind(&a.plan)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn import_device(&self, d: &Device) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO devices (id, account_id, name, created) VALUES (?, ?, ?, ?)")
            .bind(d.id)
            .bind(d.account_id)
            .bind(&d.name)
            .bind(d.created)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn import_snapshot(
        &self,
        account_id: i64,
        row: &SnapshotRow,
        session: Option<&str>,
        refs: &[BlobId],
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        if !absent(&mut tx, account_id, refs, 1).await?.is_empty() {
            return Ok(false);
        }
        let columns = SnapshotColumns {
            id: &row.id,
            device_id: row.device_id,
            time: row.time,
            files: row.files,
            bytes: row.bytes,
            snapshot_blob: &row.snapshot_blob,
            parent: row.parent.as_deref(),
            client_version: &row.client_version,
            blobs: refs.len(),
            complete: row.complete,
            session,
            partial: row.partial,
            categories: &row.categories,
        };
        // A rebuilt record keeps when the server received the backup:
        // expiry and retention count from it.
        insert_snapshot(&mut tx, account_id, &columns, row.created).await?;
        store_refs(&mut tx, account_id, &row.id, None, refs).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn console_session_create(
        &self,
        hash: [u8; 32],
        account_id: i64,
        csrf: &str,
        expires: i64,
        password_at: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        // Expired sessions and links are worthless: each new session
        // clears them, so the tables hold only live ones.
        for table in ["console_sessions", "console_links"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE expires <= ?"))
                .bind(self.clock.now())
                .execute(&mut *tx)
                .await?;
        }
        // So does the account's oldest session beyond the cap.
        sqlx::query(
            "DELETE FROM console_sessions WHERE account_id = ? AND hash IN (SELECT hash FROM \
             console_sessions WHERE account_id = ? ORDER BY rowid DESC \
             LIMIT -1 OFFSET ?)",
        )
        .bind(account_id)
        .bind(account_id)
        .bind(MAX_CONSOLE_SESSIONS - 1)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO console_sessions (hash, account_id, csrf, created, expires, password_at) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(&hash[..])
        .bind(account_id)
        .bind(csrf)
        .bind(self.clock.now())
        .bind(expires)
        .bind(password_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn console_session(&self, hash: [u8; 32]) -> Result<Option<ConsoleSession>, StoreError> {
        let row: Option<(i64, String, i64)> = sqlx::query_as(
            "SELECT account_id, csrf, password_at FROM console_sessions WHERE hash = ? AND expires > ?",
        )
        .bind(&hash[..])
        .bind(self.clock.now())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(account_id, csrf, password_at)| ConsoleSession {
            account_id,
            csrf,
            password_at,
        }))
    }

    async fn console_session_delete(&self, hash: [u8; 32]) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM console_sessions WHERE hash = ?")
            .bind(&hash[..])
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn console_link_create(
        &self,
        hash: [u8; 32],
        account_id: i64,
        expires: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        // The oldest unused links make room: a newer one replaces them.
        sqlx::query(
            "DELETE FROM console_links WHERE account_id = ? AND hash IN (SELECT hash FROM \
             console_links WHERE account_id = ? ORDER BY rowid DESC LIMIT -1 OFFSET ?)",
        )
        .bind(account_id)
        .bind(account_id)
        .bind(MAX_LINKS - 1)
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO console_links (hash, account_id, expires) VALUES (?, ?, ?)")
            .bind(&hash[..])
            .bind(account_id)
            .bind(expires)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn console_link_redeem(&self, hash: [u8; 32]) -> Result<Option<i64>, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let account: Option<i64> = sqlx::query_scalar(
            "SELECT account_id FROM console_links WHERE hash = ? AND used IS NULL AND expires > ?",
        )
        .bind(&hash[..])
        .bind(self.clock.now())
        .fetch_optional(&mut *tx)
        .await?;
        if account.is_some() {
            sqlx::query("UPDATE console_links SET used = ? WHERE hash = ?")
                .bind(self.clock.now())
                .bind(&hash[..])
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(account)
    }

    async fn packs_all(&self) -> Result<Vec<PackRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT account_id, id, object_key, size FROM packs ORDER BY account_id, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(pack_row).collect()
    }

    async fn pack_blobs(
        &self,
        account_id: i64,
        pack: PackId,
    ) -> Result<Vec<StoredBlob>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, kind, offset, length, hash, damaged FROM blobs \
             WHERE account_id = ?1 AND pack = (SELECT no FROM packs WHERE account_id = ?1 AND id = ?2) \
             ORDER BY offset",
        )
        .bind(account_id)
        .bind(&pack.0[..])
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredBlob {
                    id: blob_id(&r.try_get::<Vec<u8>, _>("id")?)?,
                    kind: r.try_get::<i64, _>("kind")? as u8,
                    offset: r.try_get::<i64, _>("offset")? as u64,
                    length: r.try_get::<i64, _>("length")? as u32,
                    hash: r.try_get("hash")?,
                    state: r.try_get::<i64, _>("damaged")? as u8,
                })
            })
            .collect()
    }

    async fn blobs_mark(
        &self,
        account_id: i64,
        pack: PackId,
        states: &[(BlobId, u8)],
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let Some(no) = pack_no(&mut tx, account_id, &pack).await? else {
            return Ok(0);
        };
        let mut changed = 0;
        for (id, state) in states {
            changed += sqlx::query(
                "UPDATE blobs SET damaged = ?1 WHERE account_id = ?2 AND id = ?3 AND pack = ?4 AND damaged <> ?1",
            )
            .bind(i64::from(*state))
            .bind(account_id)
            .bind(&id.0[..])
            .bind(no)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(changed)
    }

    async fn damaged_blobs(&self, account_id: i64) -> Result<Vec<BlobId>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        damaged_in(&mut conn, account_id).await
    }

    async fn snapshot_damaged(&self, account_id: i64, id: &str) -> Result<Vec<BlobId>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let damaged = damaged_in(&mut tx, account_id).await?;
        let found = members(&mut tx, account_id, id, &damaged).await?;
        tx.commit().await?;
        Ok(found)
    }

    async fn gc_account(
        &self,
        account_id: i64,
        session_cutoff: i64,
    ) -> Result<GcOutcome, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let mut out = GcOutcome {
            sessions_expired: sqlx::query(
                "UPDATE sessions SET closed = ? WHERE account_id = ? AND closed IS NULL AND last_active < ?",
            )
            .bind(self.clock.now())
            .bind(account_id)
            .bind(session_cutoff)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
            ..GcOutcome::default()
        };
        let garbage = format!(
            "account_id = ?1 AND NOT EXISTS (SELECT 1 FROM snapshot_refs r WHERE r.blob = blobs.no) \
             AND pack NOT IN ({OPEN_SESSION_PACKS})"
        );
        let (count, bytes): (i64, i64) = sqlx::query_as(&format!(
            "SELECT COUNT(*), COALESCE(SUM(length), 0) FROM blobs WHERE {garbage}"
        ))
        .bind(account_id)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(&format!("DELETE FROM blobs WHERE {garbage}"))
            .bind(account_id)
            .execute(&mut *tx)
            .await?;
        out.blobs_removed = count as u64;
        out.bytes_removed = bytes as u64;
        let dead = sqlx::query(&format!(
            "SELECT account_id, id, object_key, size FROM packs p WHERE p.account_id = ?1 \
             AND NOT EXISTS (SELECT 1 FROM blobs b WHERE b.pack = p.no) \
             AND p.no NOT IN ({OPEN_SESSION_PACKS})"
        ))
        .bind(account_id)
        .fetch_all(&mut *tx)
        .await?;
        for r in &dead {
            let p = pack_row(r)?;
            sqlx::query("DELETE FROM packs WHERE account_id = ? AND id = ?")
                .bind(account_id)
                .bind(&p.id.0[..])
                .execute(&mut *tx)
                .await?;
            out.dead_objects.push(p.object_key);
        }
        let sparse = sqlx::query(&format!(
            "SELECT p.account_id, p.id, p.object_key, p.size FROM packs p \
             JOIN blobs b ON b.pack = p.no \
             WHERE p.account_id = ?1 AND p.no NOT IN ({OPEN_SESSION_PACKS}) \
             GROUP BY p.no HAVING SUM(b.length) * 2 < p.size"
        ))
        .bind(account_id)
        .fetch_all(&mut *tx)
        .await?;
        out.sparse = sparse.iter().map(pack_row).collect::<Result<_, _>>()?;
        tx.commit().await?;
        Ok(out)
    }

    async fn pack_rewritten(
        &self,
        account_id: i64,
        old: PackId,
        new: PackId,
        new_key: &str,
        new_size: u64,
        blobs: &[PackBlob],
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let new_no = pack_add(
            &mut tx,
            account_id,
            &new,
            new_key,
            new_size,
            None,
            self.clock.now(),
        )
        .await?;
        let Some(old_no) = pack_no(&mut tx, account_id, &old).await? else {
            // Nothing is indexed under the old pack: it holds nothing.
            tx.commit().await?;
            return Ok(true);
        };
        for b in blobs {
            sqlx::query(
                "UPDATE blobs SET pack = ?, offset = ?, length = ?, hash = ? \
                 WHERE account_id = ? AND id = ? AND pack = ?",
            )
            .bind(new_no)
            .bind(b.offset as i64)
            .bind(b.length as i64)
            .bind(&b.hash[..STORED_HASH_LEN])
            .bind(account_id)
            .bind(&b.id.0[..])
            .bind(old_no)
            .execute(&mut *tx)
            .await?;
        }
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM blobs WHERE pack = ?")
            .bind(old_no)
            .fetch_one(&mut *tx)
            .await?;
        if left == 0 {
            sqlx::query("DELETE FROM packs WHERE no = ?")
                .bind(old_no)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(left == 0)
    }

    async fn job_record(
        &self,
        kind: &str,
        started: i64,
        finished: i64,
        report: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO jobs (kind, started, finished, report) VALUES (?, ?, ?, ?)")
            .bind(kind)
            .bind(started)
            .bind(finished)
            .bind(report)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn job_last(&self, kind: &str) -> Result<Option<(i64, i64, String)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT started, finished, report FROM jobs WHERE kind = ? ORDER BY id DESC LIMIT 1",
        )
        .bind(kind)
        .fetch_optional(&self.pool)
        .await?)
    }
}

fn pack_row(r: &sqlx::sqlite::SqliteRow) -> Result<PackRow, StoreError> {
    let id: Vec<u8> = r.try_get("id")?;
    Ok(PackRow {
        account_id: r.try_get("account_id")?,
        id: PackId(blob_id(&id)?.0),
        object_key: r.try_get("object_key")?,
        size: r.try_get::<i64, _>("size")? as u64,
    })
}
