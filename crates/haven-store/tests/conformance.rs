//! The conformance suite: every ObjectStore and MetaStore implementation
//! runs these. Today: LocalDirStore and SqliteMeta.

use haven_format::blob::BlobKind;
use haven_format::{BlobId, PackId};
use haven_store::meta::{
    AttemptRow, BLOB_DAMAGED, BlobLocation, CategoryRow, ConsoleSession, EMAIL_TAKEN,
    INVITE_INVALID, NewAccount, NewSnapshot, PackBlob, STORED_HASH_LEN, TokenScope,
};
use haven_store::{LocalDirStore, MetaStore, ObjectStore, SqliteMeta, StoreError};
use std::collections::{BTreeMap, BTreeSet};

async fn object_store_contract(s: &dyn ObjectStore) {
    assert!(matches!(
        s.get("packs/1/ab/missing").await,
        Err(StoreError::NotFound)
    ));
    s.put("packs/1/ab/one", b"hello world".to_vec())
        .await
        .expect("put");
    assert_eq!(s.get("packs/1/ab/one").await.expect("get"), b"hello world");
    assert_eq!(s.size("packs/1/ab/one").await.expect("size"), Some(11));
    assert_eq!(s.size("packs/1/ab/missing").await.expect("size"), None);
    assert_eq!(
        s.size("packs/1/ab")
            .await
            .expect("a directory is no object"),
        None
    );
    let r = s
        .get_ranges("packs/1/ab/one", vec![(6, 5), (0, 5)])
        .await
        .expect("ranges");
    assert_eq!(r, vec![&b"world"[..], &b"hello"[..]]);
    assert!(
        s.get_ranges("packs/1/ab/one", vec![(8, 5)]).await.is_err(),
        "range past the end"
    );
    s.put("packs/1/cd/two", vec![1, 2, 3]).await.expect("put");
    assert_eq!(
        s.list("packs/1/").await.expect("list"),
        vec!["packs/1/ab/one", "packs/1/cd/two"]
    );
    s.delete("packs/1/ab/one").await.expect("delete");
    assert_eq!(s.size("packs/1/ab/one").await.expect("size"), None);
    s.delete("packs/1/ab/one")
        .await
        .expect("delete is idempotent");
    assert!(matches!(
        s.get("packs/1/ab/one").await,
        Err(StoreError::NotFound)
    ));
    // Ranges as a restore asks for them, and every other shape: back to
    // back, small and large gaps, a long run, out of order, repeated,
    // overlapping, empty; each answer is exactly its bytes.
    let big: Vec<u8> = (0..(20u32 << 20)).map(|i| (i % 251) as u8).collect();
    s.put("packs/1/ab/big", big.clone()).await.expect("put");
    let mut ranges: Vec<(u64, u32)> = (0..400u64).map(|i| (i * 10_000, 10_000)).collect();
    ranges.extend([
        (4_100_000, 100),
        (4_100_200, 300),
        (4_300_000, 5),
        (4_300_005, 9 << 20),
        (1_000, 10),
        (1_000, 10),
        (1_005, 20),
        (7, 0),
        ((20 << 20) - 3, 3),
    ]);
    let got = s
        .get_ranges("packs/1/ab/big", ranges.clone())
        .await
        .expect("ranges");
    assert_eq!(got.len(), ranges.len());
    for ((offset, len), b) in ranges.iter().zip(&got) {
        assert_eq!(
            &b[..],
            &big[*offset as usize..(*offset + *len as u64) as usize],
            "range {offset}+{len}"
        );
    }
    assert!(
        s.get_ranges("packs/1/ab/big", vec![(0, 5), ((20 << 20) - 3, 4)])
            .await
            .is_err(),
        "a run whose last range ends past the object"
    );
    s.delete("packs/1/ab/big").await.expect("delete");
    // A file handed over is stored whole and taken away.
    let staged = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(staged.path(), b"moved into place").expect("write");
    let (_, staged) = staged.keep().expect("keep");
    s.put_file("packs/1/ef/three", &staged, 16)
        .await
        .expect("put_file");
    assert_eq!(
        s.get("packs/1/ef/three").await.expect("get"),
        b"moved into place"
    );
    assert!(!staged.exists(), "put_file takes the file");
    for bad in ["../etc/passwd", "/abs", "a//b", "a/./b", "UPPER", ""] {
        assert!(
            matches!(s.put(bad, vec![]).await, Err(StoreError::Invalid(_))),
            "{bad}"
        );
    }
}

fn account(email: &str) -> NewAccount {
    NewAccount {
        email: email.into(),
        kdf: "{}".into(),
        auth_hash: [1; 32],
        wrapped_key: vec![2; 73],
        recovery_auth_hash: [3; 32],
        recovery_wrapped_key: vec![4; 73],
    }
}

fn blob(n: u8) -> PackBlob {
    PackBlob {
        id: BlobId([n; 32]),
        kind: BlobKind::Data,
        offset: 5 + n as u64,
        length: 50,
        hash: [n; 32],
    }
}

fn snap(
    account_id: i64,
    device_id: i64,
    id: &str,
    parent: Option<&str>,
    added: &[u8],
    removed: &[u8],
) -> NewSnapshot {
    NewSnapshot {
        account_id,
        device_id,
        id: id.into(),
        time: 1000,
        files: 1,
        bytes: 2,
        snapshot_blob: BlobId([200; 32]),
        parent: parent.map(String::from),
        client_version: "t".into(),
        added: added.iter().map(|&n| BlobId([n; 32])).collect(),
        removed: removed.iter().map(|&n| BlobId([n; 32])).collect(),
        complete: true,
        session: None,
        partial: false,
        categories: "[]".into(),
        quota: None,
    }
}

async fn meta_store_contract(m: &dyn MetaStore) {
    // Accounts and invites.
    let a = m
        .account_create(&account("a@x"), None)
        .await
        .expect("create");
    assert!(matches!(
        m.account_create(&account("a@x"), None).await,
        Err(StoreError::Conflict(EMAIL_TAKEN))
    ));
    m.invite_create([9; 32], Some("b@x"), i64::MAX, Some("family"))
        .await
        .expect("invite");
    assert!(
        matches!(
            m.account_create(&account("c@x"), Some([9; 32])).await,
            Err(StoreError::Conflict(INVITE_INVALID))
        ),
        "invite bound to another email"
    );
    assert!(
        m.account_by_email("c@x").await.expect("lookup").is_none(),
        "failed sign-up left no account"
    );
    let b = m
        .account_create(&account("b@x"), Some([9; 32]))
        .await
        .expect("redeem");
    assert!(
        matches!(
            m.account_create(&account("d@x"), Some([9; 32])).await,
            Err(StoreError::Conflict(INVITE_INVALID))
        ),
        "invite is one-time"
    );
    assert!(
        m.account_by_email("a@x")
            .await
            .expect("get")
            .expect("exists")
            .is_admin
    );
    let b_row = m.account(b).await.expect("get").expect("exists");
    assert!(!b_row.is_admin);
    assert_eq!(
        b_row.plan.as_deref(),
        Some("family"),
        "the invite's plan applies"
    );
    m.account_set_plan(b, None).await.expect("plan");
    assert_eq!(m.account(b).await.expect("get").expect("exists").plan, None);
    assert_eq!(m.accounts().await.expect("list").len(), 2);

    // The compression dictionary: the first one set stays.
    assert_eq!(m.account_dictionary(a).await.expect("get"), None);
    assert_eq!(
        m.account_dictionary_init(a, b"first").await.expect("set"),
        b"first"
    );
    assert_eq!(
        m.account_dictionary_init(a, b"second").await.expect("set"),
        b"first",
        "a dictionary is never replaced"
    );
    assert_eq!(
        m.account_dictionary(a).await.expect("get").as_deref(),
        Some(&b"first"[..])
    );
    assert_eq!(m.account_dictionary(b).await.expect("get"), None);
    assert!(matches!(
        m.account_dictionary_init(9999, b"x").await,
        Err(StoreError::NotFound)
    ));

    // Devices and tokens.
    let (da, existed) = m.device_upsert(a, "laptop").await.expect("device");
    assert!(!existed);
    let (da2, existed) = m.device_upsert(a, "laptop").await.expect("device");
    assert!(existed);
    assert_eq!(da.id, da2.id);
    let (db, _) = m.device_upsert(b, "laptop").await.expect("device");
    m.token_create([5; 32], a, da.id).await.expect("token");
    let t = m
        .token_lookup([5; 32])
        .await
        .expect("lookup")
        .expect("token");
    assert_eq!((t.account_id, t.device_id), (a, da.id));
    assert!(t.last_used > 0, "a new sign-in counts as used now");
    m.console_session_create([6; 32], a, "csrf", i64::MAX, 77)
        .await
        .expect("session");
    assert_eq!(
        m.console_session([6; 32]).await.expect("session"),
        Some(ConsoleSession {
            account_id: a,
            csrf: "csrf".into(),
            password_at: 77
        })
    );
    m.console_link_create([4; 32], a, i64::MAX)
        .await
        .expect("link");
    m.account_set_password(a, "{}", [7; 32], &[8; 73])
        .await
        .expect("password");
    assert_eq!(
        m.console_session([6; 32]).await.expect("session"),
        None,
        "a new password ends browser sessions"
    );
    assert_eq!(m.console_link_redeem([4; 32]).await.expect("link"), None);
    assert!(
        m.token_lookup([5; 32]).await.expect("lookup").is_some(),
        "device sign-ins are the caller's to end (tokens_revoke)"
    );
    // Ending sign-ins: by device, all but one device, all; each remembers why.
    let (dc, _) = m.device_upsert(a, "phone").await.expect("device");
    m.token_create([9; 32], a, dc.id).await.expect("token");
    m.token_create([10; 32], b, db.id).await.expect("token");
    let devs = m.devices(a).await.expect("devices");
    assert!(devs.iter().all(|d| d.signed_in), "{devs:?}");
    assert_eq!(
        m.tokens_revoke(a, TokenScope::Device(dc.id), "device_removed")
            .await
            .expect("revoke"),
        vec![[9; 32]]
    );
    assert_eq!(m.token_lookup([9; 32]).await.expect("lookup"), None);
    assert_eq!(
        m.token_revoked([9; 32]).await.expect("why").as_deref(),
        Some("device_removed")
    );
    let devs = m.devices(a).await.expect("devices");
    assert!(
        !devs
            .iter()
            .find(|d| d.id == dc.id)
            .expect("phone")
            .signed_in
    );
    assert_eq!(
        m.tokens_revoke(a, TokenScope::AllExcept(Some(da.id)), "password_changed")
            .await
            .expect("revoke"),
        Vec::<[u8; 32]>::new(),
        "the laptop's sign-in stays"
    );
    assert!(m.token_lookup([5; 32]).await.expect("lookup").is_some());
    assert_eq!(
        m.tokens_revoke(a, TokenScope::AllExcept(None), "password_changed")
            .await
            .expect("revoke"),
        vec![[5; 32]]
    );
    assert!(
        m.token_lookup([10; 32]).await.expect("lookup").is_some(),
        "another account's sign-ins are untouched"
    );
    assert_eq!(m.token_revoked([10; 32]).await.expect("why"), None);
    // Use is recorded; unused sign-ins expire, across accounts.
    m.token_touch([10; 32], db.id, 1_000).await.expect("touch");
    assert_eq!(
        m.token_lookup([10; 32])
            .await
            .expect("lookup")
            .expect("token")
            .last_used,
        1_000
    );
    assert_eq!(
        m.devices(b).await.expect("devices")[0].last_seen,
        Some(1_000)
    );
    assert_eq!(
        m.tokens_expire(1_001).await.expect("expire"),
        vec![(b, [10; 32])]
    );
    assert_eq!(
        m.token_revoked([10; 32]).await.expect("why").as_deref(),
        Some("expired")
    );

    // Blobs are per account.
    let blobs: Vec<PackBlob> = (1..=4)
        .map(blob)
        .chain([PackBlob {
            id: BlobId([200; 32]),
            ..blob(5)
        }])
        .collect();
    assert_eq!(
        m.pack_insert(a, PackId([1; 32]), "packs/a/1", 1000, &blobs, None, None)
            .await
            .expect("pack"),
        0
    );
    assert_eq!(
        m.pack_insert(
            a,
            PackId([2; 32]),
            "packs/a/2",
            1000,
            &blobs[..2],
            None,
            None
        )
        .await
        .expect("pack"),
        2
    );
    let ids: Vec<BlobId> = (1..=6).map(|n| BlobId([n; 32])).collect();
    assert_eq!(
        m.blobs_missing(a, &ids).await.expect("missing"),
        vec![BlobId([5; 32]), BlobId([6; 32])]
    );
    assert_eq!(
        m.blobs_missing(b, &ids[..2]).await.expect("missing"),
        ids[..2].to_vec(),
        "b cannot see a's blobs"
    );
    let loc = m.blob_locations(a, &ids[..1]).await.expect("loc");
    assert_eq!(
        loc[0].as_ref().expect("found").object_key,
        "packs/a/1",
        "first location wins"
    );
    // In request order, repeats answered twice, unknown ids as None.
    let asked = [ids[3], BlobId([200; 32]), ids[4], ids[0], ids[3]];
    let loc = m.blob_locations(a, &asked).await.expect("loc");
    let want = |n: u8| {
        Some(BlobLocation {
            object_key: "packs/a/1".into(),
            offset: 5 + n as u64,
            length: 50,
            // The index keeps the first STORED_HASH_LEN bytes.
            hash: vec![n; STORED_HASH_LEN],
        })
    };
    assert_eq!(loc, vec![want(4), want(5), None, want(1), want(4)]);
    assert_eq!(
        m.blob_locations(b, &ids[..1]).await.expect("loc"),
        vec![None]
    );

    // Commits are checked, delta-encoded and idempotent.
    match m
        .snapshot_commit(&snap(a, da.id, "s1", None, &[1, 2, 6], &[]))
        .await
    {
        Err(StoreError::BlobsMissing(ids)) => assert_eq!(ids, vec![BlobId([6; 32])]),
        other => panic!("expected BlobsMissing, got {other:?}"),
    }
    assert!(
        m.snapshots(a, None).await.expect("list").is_empty(),
        "a refused commit leaves nothing"
    );
    let s1 = m
        .snapshot_commit(&snap(a, da.id, "s1", None, &[1, 2, 3], &[]))
        .await
        .expect("commit");
    assert_eq!(s1.blobs, 4);
    assert_eq!(
        m.snapshot_commit(&snap(a, da.id, "s1", None, &[1, 2, 3], &[]))
            .await
            .expect("retry"),
        s1
    );
    let s2 = m
        .snapshot_commit(&snap(a, da.id, "s2", Some("s1"), &[4], &[1]))
        .await
        .expect("commit");
    assert_eq!(s2.blobs, 4, "2, 3, 4 and the snapshot blob");
    let ids = |ns: &[u8]| ns.iter().map(|&n| BlobId([n; 32])).collect::<Vec<_>>();
    assert_eq!(
        m.snapshot_refs(a, "s2").await.expect("refs"),
        ids(&[2, 3, 4, 200]),
        "the parent's set, less the removed, plus the added, in id order"
    );
    assert_eq!(
        m.snapshot_refs(a, "s1").await.expect("refs"),
        ids(&[1, 2, 3, 200])
    );
    assert!(m.snapshot_refs(a, "none").await.expect("refs").is_empty());
    assert!(
        m.snapshot_refs(b, "s2").await.expect("refs").is_empty(),
        "another account's snapshot has no references for b"
    );
    assert!(
        matches!(
            m.snapshot_commit(&snap(b, db.id, "s3", Some("s1"), &[], &[]))
                .await,
            Err(StoreError::NotFound)
        ),
        "b cannot use a's snapshot as parent"
    );
    assert!(
        matches!(
            m.snapshot_commit(&snap(b, db.id, "s3", None, &[1], &[]))
                .await,
            Err(StoreError::BlobsMissing(_))
        ),
        "b cannot reference a's blobs"
    );
    assert_eq!(m.snapshots(a, Some(da.id)).await.expect("list").len(), 2);
    assert_eq!(
        m.snapshots(a, None).await.expect("list")[0].id,
        "s2",
        "same second: the later commit is newest"
    );
    assert!(m.snapshots(b, None).await.expect("list").is_empty());
    assert!(m.snapshot(b, "s1").await.expect("get").is_none());
    assert!(
        !m.snapshot_delete(b, "s1").await.expect("delete"),
        "b cannot delete a's snapshot"
    );
    assert!(m.snapshot_delete(a, "s1").await.expect("delete"));
    assert!(m.snapshot(a, "s2").await.expect("get").is_some());
    let s2 = m.snapshot(a, "s2").await.expect("get").expect("s2");
    assert_eq!(
        m.devices(a).await.expect("devices")[0].last_backup,
        Some(s2.created),
        "when the server received it, not the time the device claims"
    );

    quota_contract(m, b, db.id).await;
    gc_contract(m, b, db.id).await;

    // Category switches and scans, attempts.
    m.category_set(a, da.id, "Photos", false)
        .await
        .expect("switch");
    let scan = |name: &str, files| CategoryRow {
        name: name.into(),
        enabled: true,
        files,
        bytes: files * 10,
        new_bytes: files,
        scanned: None,
    };
    m.categories_scanned(a, da.id, &[scan("Documents", 3), scan("Photos", 2)])
        .await
        .expect("scan");
    let cats = m.categories(a, da.id).await.expect("categories");
    assert_eq!(cats.len(), 2);
    assert!(cats[0].enabled && cats[0].name == "Documents" && cats[0].bytes == 30);
    assert!(!cats[1].enabled, "a scan keeps the switch");
    assert!(m.categories(b, da.id).await.expect("categories").is_empty());
    let attempt = AttemptRow {
        device: String::new(),
        started: 5,
        finished: 6,
        result: "failed".into(),
        code: Some("quota_exceeded".into()),
        message: "m".into(),
        fix: "[]".into(),
        snapshot: None,
        uploaded: 0,
        received: 123,
    };
    m.attempt_add(a, da.id, &attempt).await.expect("attempt");
    let listed = m.attempts(a, Some(da.id), 10).await.expect("attempts");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].received, 123);
    assert_eq!(listed[0].device, "laptop");
    assert!(m.attempts(b, None, 10).await.expect("attempts").is_empty());

    assert_eq!(m.setting_init("k", b"v1").await.expect("init"), b"v1");
    assert_eq!(
        m.setting_init("k", b"v2").await.expect("init"),
        b"v1",
        "first value stays"
    );
}

/// Reservations and the per-pack and per-commit quota checks, on an
/// account `b` with no data yet.
async fn quota_contract(m: &dyn MetaStore, b: i64, device: i64) {
    let quota = Some(120);
    let s1 = m
        .session_open(b, device, None, None, quota)
        .await
        .expect("session");
    assert_eq!(s1.available, Some(120));
    m.session_open(b, device, Some(&s1.id), Some(100), quota)
        .await
        .expect("reserve 100 of 120");
    let s2 = m
        .session_open(b, device, None, None, quota)
        .await
        .expect("session");
    assert_eq!(s2.available, Some(20), "s1's reservation counts");
    match m
        .session_open(b, device, Some(&s2.id), Some(50), quota)
        .await
    {
        Err(StoreError::QuotaExceeded { needed, available }) => {
            assert_eq!((needed, available), (50, 20))
        }
        other => panic!("expected QuotaExceeded, got {other:?}"),
    }
    let two: Vec<PackBlob> = (30..32).map(blob).collect();
    match m
        .pack_insert(
            b,
            PackId([30; 32]),
            "packs/b/30",
            500,
            &two,
            Some(&s2.id),
            quota,
        )
        .await
    {
        Err(StoreError::QuotaExceeded { needed, available }) => {
            assert_eq!((needed, available), (100, 20))
        }
        other => panic!("expected QuotaExceeded, got {other:?}"),
    }
    let ids: Vec<BlobId> = two.iter().map(|b| b.id).collect();
    assert_eq!(
        m.blobs_missing(b, &ids).await.expect("missing"),
        ids,
        "a refused pack indexes nothing"
    );
    m.pack_insert(
        b,
        PackId([31; 32]),
        "packs/b/31",
        500,
        &two,
        Some(&s1.id),
        quota,
    )
    .await
    .expect("within s1's reservation");
    let u = m.usage(b).await.expect("usage");
    assert_eq!(u.used, 100, "an open session's blobs count");
    assert_eq!(u.reserved, 0, "s1 stored what it reserved");
    let third = [blob(32)];
    assert!(
        matches!(
            m.pack_insert(
                b,
                PackId([32; 32]),
                "packs/b/32",
                500,
                &third,
                Some(&s1.id),
                quota
            )
            .await,
            Err(StoreError::QuotaExceeded { .. })
        ),
        "100 + 50 > 120 whatever the reservation"
    );
    let mut c = snap(b, device, "q1", None, &[30, 31], &[]);
    c.snapshot_blob = BlobId([30; 32]);
    c.session = Some(s1.id.clone());
    c.quota = quota;
    m.snapshot_commit(&c).await.expect("commit within quota");
    assert_eq!(m.usage(b).await.expect("usage").used, 100);
    assert_eq!(m.used(b).await.expect("used"), 100, "the same figure alone");
    assert!(m.snapshot_delete(b, "q1").await.expect("delete"));
    assert_eq!(m.usage(b).await.expect("usage").used, 0);
    // The deleted backup's blobs are still indexed: a new backup that
    // references them makes them count again, and is checked.
    let mut c = snap(b, device, "q2", None, &[30, 31], &[]);
    c.snapshot_blob = BlobId([30; 32]);
    c.quota = Some(60);
    assert!(matches!(
        m.snapshot_commit(&c).await,
        Err(StoreError::QuotaExceeded { .. })
    ));
    assert!(m.snapshot(b, "q2").await.expect("get").is_none());
}

/// GC keeps what snapshots and open sessions reference, and a commit
/// after GC that references collected blobs is refused.
async fn gc_contract(m: &dyn MetaStore, b: i64, device: i64) {
    let now = haven_store::now_secs();
    let s = m
        .session_open(b, device, None, None, None)
        .await
        .expect("session");
    m.pack_insert(
        b,
        PackId([40; 32]),
        "packs/b/40",
        500,
        &[blob(40)],
        Some(&s.id),
        None,
    )
    .await
    .expect("pack");
    m.pack_insert(
        b,
        PackId([41; 32]),
        "packs/b/41",
        500,
        &[blob(41)],
        None,
        None,
    )
    .await
    .expect("pack");
    let out = m.gc_account(b, now - 3600).await.expect("gc");
    assert_eq!(
        out.blobs_removed, 3,
        "41 and the blobs of the deleted q1/q2 tests"
    );
    assert!(out.dead_objects.contains(&"packs/b/41".to_string()));
    assert_eq!(
        m.blobs_missing(b, &[BlobId([40; 32]), BlobId([41; 32])])
            .await
            .expect("missing"),
        vec![BlobId([41; 32])],
        "the open session's blob stays"
    );
    // A backup that was told 41 existed commits after GC: refused.
    let mut c = snap(b, device, "g1", None, &[40, 41], &[]);
    c.snapshot_blob = BlobId([40; 32]);
    assert!(matches!(
        m.snapshot_commit(&c).await,
        Err(StoreError::BlobsMissing(ids)) if ids == vec![BlobId([41; 32])]
    ));
    // An expired session protects nothing.
    let out = m.gc_account(b, now + 3600).await.expect("gc");
    assert_eq!(out.sessions_expired, 2, "this one and the quota test's s2");
    assert_eq!(out.blobs_removed, 1);
    // Scrub marks, and a new copy heals.
    m.pack_insert(
        b,
        PackId([42; 32]),
        "packs/b/42",
        500,
        &[blob(42)],
        None,
        None,
    )
    .await
    .expect("pack");
    let mut c = snap(b, device, "g2", None, &[42], &[]);
    c.snapshot_blob = BlobId([42; 32]);
    m.snapshot_commit(&c).await.expect("commit");
    assert_eq!(
        m.blobs_mark(b, PackId([42; 32]), &[(BlobId([42; 32]), BLOB_DAMAGED)])
            .await
            .expect("mark"),
        1
    );
    assert_eq!(
        m.snapshot(b, "g2")
            .await
            .expect("get")
            .expect("exists")
            .damaged,
        1
    );
    assert_eq!(
        m.damaged_blobs(b).await.expect("damaged"),
        vec![BlobId([42; 32])]
    );
    assert_eq!(
        m.blobs_missing(b, &[BlobId([42; 32])])
            .await
            .expect("missing"),
        vec![BlobId([42; 32])],
        "a damaged blob is reported missing, so it is uploaded again"
    );
    m.pack_insert(
        b,
        PackId([43; 32]),
        "packs/b/43",
        500,
        &[blob(42)],
        None,
        None,
    )
    .await
    .expect("heal");
    assert_eq!(
        m.snapshot(b, "g2")
            .await
            .expect("get")
            .expect("exists")
            .damaged,
        0
    );
    let loc = m.blob_locations(b, &[BlobId([42; 32])]).await.expect("loc");
    assert_eq!(loc[0].as_ref().expect("found").object_key, "packs/b/43");
}

/// What every snapshot of `model` references, and what deleting it frees,
/// as the store answers it, against the model's sets.
async fn check_sets(m: &dyn MetaStore, a: i64, model: &BTreeMap<&str, BTreeSet<u8>>, step: &str) {
    let live: BTreeSet<u8> = model.values().flatten().copied().collect();
    let usage = m.usage(a).await.expect("usage");
    assert_eq!(
        usage.used,
        50 * live.len() as u64,
        "{step}: bytes referenced"
    );
    for (id, set) in model {
        let want: Vec<BlobId> = set.iter().map(|&n| BlobId([n; 32])).collect();
        assert_eq!(
            m.snapshot_refs(a, id).await.expect("refs"),
            want,
            "{step}: references of {id}"
        );
        let row = m.snapshot(a, id).await.expect("get").expect("exists");
        assert_eq!(row.blobs, set.len() as u64, "{step}: count of {id}");
        let only = set
            .iter()
            .filter(|n| !model.iter().any(|(o, s)| o != id && s.contains(n)))
            .count() as u64;
        assert_eq!(
            m.freed_if_deleted(a, id).await.expect("freed"),
            50 * only,
            "{step}: freed if {id} were deleted"
        );
    }
}

/// Which snapshots reference the damaged blob 84, as the store counts it.
async fn check_damage(m: &dyn MetaStore, a: i64, model: &BTreeMap<&str, BTreeSet<u8>>, step: &str) {
    for (id, set) in model {
        let want: Vec<BlobId> = set
            .contains(&84)
            .then_some(BlobId([84; 32]))
            .into_iter()
            .collect();
        assert_eq!(
            m.snapshot_damaged(a, id).await.expect("damaged"),
            want,
            "{step}: {id}"
        );
        let row = m.snapshot(a, id).await.expect("get").expect("exists");
        assert_eq!(row.damaged, want.len() as u64, "{step}: {id}");
    }
}

/// Snapshots stored as differences from others stay whole through
/// commits, checkpoints and deletions in any order. Returns the account
/// and what its snapshots reference.
async fn chain_contract(m: &dyn MetaStore) -> (i64, BTreeMap<&'static str, BTreeSet<u8>>) {
    let a = m
        .account_create(&account("chain@x"), None)
        .await
        .expect("create");
    let (d, _) = m.device_upsert(a, "phone").await.expect("device");
    let blobs: Vec<PackBlob> = (60..=90)
        .map(blob)
        .chain([PackBlob {
            id: BlobId([200; 32]),
            ..blob(5)
        }])
        .collect();
    m.pack_insert(a, PackId([60; 32]), "packs/c/60", 9000, &blobs, None, None)
        .await
        .expect("pack");
    let mut model: BTreeMap<&'static str, BTreeSet<u8>> = BTreeMap::new();
    let commit = async |id: &'static str,
                        parent: Option<&'static str>,
                        added: &[u8],
                        removed: &[u8],
                        complete: bool,
                        model: &mut BTreeMap<&'static str, BTreeSet<u8>>| {
        let mut new = snap(a, d.id, id, parent, added, removed);
        new.complete = complete;
        m.snapshot_commit(&new).await.expect("commit");
        let mut set = parent.map(|p| model[p].clone()).unwrap_or_default();
        for n in removed {
            set.remove(n);
        }
        set.extend(added.iter().copied().chain([200]));
        model.insert(id, set);
    };
    commit(
        "c1",
        None,
        &(60..=80).collect::<Vec<_>>(),
        &[],
        true,
        &mut model,
    )
    .await;
    commit("c2", Some("c1"), &[81], &[60, 61], true, &mut model).await;
    commit("c3", Some("c2"), &[82, 60], &[62], true, &mut model).await;
    commit("c3b", Some("c2"), &[83], &[63, 81], true, &mut model).await;
    commit("c4", Some("c3"), &[84, 88], &[64, 250], true, &mut model).await;
    check_sets(m, a, &model, "after commits").await;

    // A run's checkpoints, each against the one before, then its snapshot:
    // the checkpoints go, the snapshot keeps every reference.
    commit("k1", Some("c4"), &[85], &[65], false, &mut model).await;
    commit("k2", Some("k1"), &[86], &[66], false, &mut model).await;
    commit("c5", Some("k2"), &[87], &[67], true, &mut model).await;
    model.remove("k1");
    model.remove("k2");
    assert!(m.snapshot(a, "k1").await.expect("get").is_none());
    assert!(m.snapshot_refs(a, "k1").await.expect("refs").is_empty());
    assert!(m.snapshot(a, "k2").await.expect("get").is_none());
    check_sets(m, a, &model, "after a run with checkpoints").await;

    // Deleting the snapshot stored whole, then one with two dependents,
    // then the newest.
    for gone in ["c1", "c2", "c5", "c3"] {
        assert!(m.snapshot_delete(a, gone).await.expect("delete"));
        assert!(m.snapshot_refs(a, gone).await.expect("refs").is_empty());
        model.remove(gone);
        check_sets(m, a, &model, &format!("after deleting {gone}")).await;
    }
    assert!(!m.snapshot_delete(a, "c3").await.expect("delete"));

    // Deleting from the middle of a chain: the heir takes over rows that
    // are a difference themselves, re-adding what they drop (84) and
    // dropping what they add (89).
    commit("e1", Some("c4"), &[70, 89], &[84], true, &mut model).await;
    commit("e2", Some("e1"), &[84, 90], &[89, 71], true, &mut model).await;
    commit("e3", Some("e2"), &[62], &[90], true, &mut model).await;
    check_sets(m, a, &model, "after the e chain").await;
    // Damage is counted through the chain: e1 drops 84, which c4 under
    // it adds; e2 adds it again.
    m.blobs_mark(a, PackId([60; 32]), &[(BlobId([84; 32]), BLOB_DAMAGED)])
        .await
        .expect("mark");
    check_damage(m, a, &model, "after the e chain").await;
    for gone in ["e1", "e2", "c4"] {
        assert!(m.snapshot_delete(a, gone).await.expect("delete"));
        assert!(m.snapshot_refs(a, gone).await.expect("refs").is_empty());
        model.remove(gone);
        check_sets(m, a, &model, &format!("after deleting {gone}")).await;
    }

    check_damage(m, a, &model, "after the deletions").await;

    // GC keeps exactly what a remaining snapshot references.
    let live: BTreeSet<u8> = model.values().flatten().copied().collect();
    let out = m
        .gc_account(a, haven_store::now_secs() - 3600)
        .await
        .expect("gc");
    let all: Vec<BlobId> = blobs.iter().map(|b| b.id).collect();
    let gone: Vec<BlobId> = all
        .iter()
        .filter(|b| !live.contains(&b.0[0]))
        .copied()
        .collect();
    assert_eq!(out.blobs_removed, gone.len() as u64);
    let mut missing = m.blobs_missing(a, &all).await.expect("missing");
    // 84 is damaged: reported missing so that it is uploaded again.
    missing.retain(|b| b.0[0] != 84);
    assert_eq!(missing, gone);
    check_sets(m, a, &model, "after GC").await;
    (a, model)
}

/// Rows a client makes the store keep are bounded per account (devices,
/// categories, attempts) and failures to prove a password are counted in
/// a window.
async fn limits_contract(m: &dyn MetaStore) {
    use haven_store::meta::{
        MAX_ATTEMPTS, MAX_CATEGORIES, MAX_DEVICES, TOO_MANY_CATEGORIES, TOO_MANY_DEVICES,
    };
    let a = m
        .account_create(&account("limits@x"), None)
        .await
        .expect("create");
    let mut first = 0;
    for i in 0..MAX_DEVICES {
        let (d, _) = m.device_upsert(a, &format!("d{i}")).await.expect("device");
        if i == 0 {
            first = d.id;
        }
    }
    assert!(matches!(
        m.device_upsert(a, "one more").await,
        Err(StoreError::Conflict(TOO_MANY_DEVICES))
    ));
    assert!(m.device_upsert(a, "d5").await.expect("existing").1);
    for i in 0..MAX_CATEGORIES {
        m.category_set(a, first, &format!("c{i}"), true)
            .await
            .expect("category");
    }
    assert!(matches!(
        m.category_set(a, first, "one more", false).await,
        Err(StoreError::Conflict(TOO_MANY_CATEGORIES))
    ));
    m.category_set(a, first, "c3", false)
        .await
        .expect("existing");
    // A scan forgets the categories it no longer has, unless switched off.
    m.categories_scanned(
        a,
        first,
        &[CategoryRow {
            name: "c1".into(),
            enabled: true,
            files: 1,
            bytes: 2,
            new_bytes: 0,
            scanned: None,
        }],
    )
    .await
    .expect("scan");
    let names: Vec<String> = m
        .categories(a, first)
        .await
        .expect("categories")
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, vec!["c1".to_string(), "c3".to_string()]);
    for i in 0..MAX_ATTEMPTS + 5 {
        let row = AttemptRow {
            device: String::new(),
            started: i,
            finished: i,
            result: "ok".into(),
            code: None,
            message: format!("{i}"),
            fix: "[]".into(),
            snapshot: None,
            uploaded: 0,
            received: i,
        };
        m.attempt_add(a, first, &row).await.expect("attempt");
    }
    let kept = m.attempts(a, Some(first), 5000).await.expect("attempts");
    assert_eq!(kept.len() as i64, MAX_ATTEMPTS);
    assert_eq!(kept.last().expect("oldest").message, "5");
    // Attempts count as failures until they succeed; a key with `max`
    // failures in the window is limited; old failures are forgotten.
    use haven_store::meta::AuthAttempt;
    let keys = ["account:x".to_string(), "addr:1.2.3.4".to_string()];
    let mut counted = Vec::new();
    for t in [100, 200, 300] {
        match m.auth_attempt(&keys, t, 0, 3).await.expect("attempt") {
            AuthAttempt::Counted(rows) => counted.push(rows),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        m.auth_attempt(&keys, 301, 0, 3).await.expect("attempt"),
        AuthAttempt::Limited {
            failures: 3,
            oldest: 100
        }
    );
    // The one at 300 succeeded: two failures are left.
    m.auth_attempt_succeeded(&counted[2]).await.expect("forget");
    assert!(matches!(
        m.auth_attempt(&keys, 302, 0, 3).await.expect("attempt"),
        AuthAttempt::Counted(_)
    ));
    // Past the window (since 150), the failure at 100 is forgotten: 200
    // and 302 count, and one more makes three.
    assert!(matches!(
        m.auth_attempt(&keys[1..], 400, 150, 3)
            .await
            .expect("attempt"),
        AuthAttempt::Counted(_)
    ));
    assert_eq!(
        m.auth_attempt(&keys[1..], 401, 150, 3)
            .await
            .expect("attempt"),
        AuthAttempt::Limited {
            failures: 3,
            oldest: 200
        }
    );
}

#[tokio::test]
async fn local_dir_store_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    object_store_contract(&LocalDirStore::open(dir.path()).expect("open")).await;
}

#[tokio::test]
async fn sqlite_meta_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = SqliteMeta::open(&dir.path().join("meta.db"))
        .await
        .expect("open");
    meta_store_contract(&m).await;
    limits_contract(&m).await;
    let (chain_account, sets) = chain_contract(&m).await;
    drop(m);
    // Reopening runs no migration twice and keeps the data; the sets are
    // read from their rows, not from what the store remembered.
    let m = SqliteMeta::open(&dir.path().join("meta.db"))
        .await
        .expect("reopen");
    assert!(m.account_by_email("a@x").await.expect("get").is_some());
    check_sets(&m, chain_account, &sets, "after reopening").await;
    // Without the cache of recent sets, every answer comes from the rows.
    let m = SqliteMeta::open_with_cache(&dir.path().join("uncached.db"), 0)
        .await
        .expect("open");
    chain_contract(&m).await;
}

/// A request whose client goes away is dropped mid-await (hyper cancels
/// the handler), anywhere in a store call, including between SQLite's
/// `BEGIN IMMEDIATE` and the moment sqlx has a transaction to roll back.
/// No such drop may leave a connection holding the write lock: afterwards
/// every write still goes through at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_call_cancelled_anywhere_never_keeps_the_write_lock() {
    use std::sync::Arc;
    use std::time::Duration;
    let dir = tempfile::tempdir().expect("tempdir");
    let m = Arc::new(
        SqliteMeta::open(&dir.path().join("meta.db"))
            .await
            .expect("open"),
    );
    for round in 0..400u64 {
        // Writers that contend for the lock, each cut off after a few
        // microseconds to a few milliseconds.
        let tasks: Vec<_> = (0..4u64)
            .map(|i| {
                let m = m.clone();
                tokio::spawn(async move {
                    let cut = Duration::from_micros((round * 37 + i * 101) % 3000);
                    let key = format!("k{round}-{i}");
                    let _ = tokio::time::timeout(cut, m.setting_init(&key, b"v")).await;
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
    }
    // With a leaked transaction, this waits out the 30 s busy timeout and
    // fails with "database is locked".
    for i in 0..16 {
        let key = format!("after-{i}");
        let v = tokio::time::timeout(Duration::from_secs(10), m.setting_init(&key, b"ok"))
            .await
            .unwrap_or_else(|_| panic!("write {i} waited 10 s for the lock"))
            .expect("write after the cancellations");
        assert_eq!(v, b"ok");
    }
}

/// Expired console sessions and links do not pile up: a new session
/// clears them, and leaves live ones alone.
#[tokio::test]
async fn a_new_console_session_clears_expired_sessions_and_links() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("meta.db");
    let m = SqliteMeta::open(&path).await.expect("open");
    let a = m
        .account_create(&account("s@x"), None)
        .await
        .expect("create");
    m.console_session_create([1; 32], a, "c1", 1, 0)
        .await
        .expect("old");
    m.console_link_create([2; 32], a, 1)
        .await
        .expect("old link");
    m.console_link_create([3; 32], a, i64::MAX)
        .await
        .expect("live link");
    m.console_session_create([4; 32], a, "c4", i64::MAX, 0)
        .await
        .expect("new");
    let mut db = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .expect("connect");
    let mut hashes = Vec::new();
    for table in ["console_sessions", "console_links"] {
        let rows: Vec<(Vec<u8>,)> =
            sqlx::query_as(&format!("SELECT hash FROM {table} ORDER BY hash"))
                .fetch_all(&mut db)
                .await
                .expect("rows");
        hashes.push(rows.into_iter().map(|(h,)| h[0]).collect::<Vec<_>>());
    }
    assert_eq!(hashes, vec![vec![4], vec![3]]);
    assert_eq!(
        m.console_session([4; 32]).await.expect("live"),
        Some(ConsoleSession {
            account_id: a,
            csrf: "c4".into(),
            password_at: 0
        })
    );
}

/// A database written by the schema before pack and blob numbers
/// (migration 8) opens with its blobs where they were and its backups'
/// references whole. A blob whose pack row is gone, or that a backup
/// references without an index row, is kept as missing, so the next
/// backup that has it uploads it again.
#[tokio::test]
async fn a_database_from_before_pack_and_blob_numbers_keeps_its_blobs() {
    // The schema as migration 8 left it.
    let before = &haven_store::MIGRATIONS[..8];
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("meta.db");
    let (p1, p2, gone) = (PackId([1; 32]), PackId([2; 32]), PackId([3; 32]));
    {
        let c = rusqlite::Connection::open(&path).expect("open");
        for sql in before {
            c.execute_batch(sql).expect("old schema");
        }
        c.pragma_update(None, "user_version", before.len() as i64)
            .expect("version");
        c.execute(
            "INSERT INTO accounts (id, email, kdf, auth_hash, wrapped_key, recovery_auth_hash, \
             recovery_wrapped_key, created) VALUES (7, 'old@x', 'k', x'00', x'00', x'00', x'00', 0)",
            [],
        )
        .expect("account");
        for (pack, key) in [(&p1, "packs/7/one"), (&p2, "packs/7/two")] {
            c.execute(
                "INSERT INTO packs (account_id, id, object_key, size, created) VALUES (7, ?1, ?2, 100, 0)",
                rusqlite::params![&pack.0[..], key],
            )
            .expect("pack");
        }
        for (n, pack, offset) in [(1u8, &p1, 0i64), (2, &p1, 40), (3, &p2, 0), (4, &gone, 0)] {
            c.execute(
                "INSERT INTO blobs (account_id, id, kind, pack_id, offset, length, hash) \
                 VALUES (7, ?1, 0, ?2, ?3, 40, ?4)",
                rusqlite::params![&[n; 32][..], &pack.0[..], offset, &[n; 32][..]],
            )
            .expect("blob");
        }
        c.execute_batch(
            "INSERT INTO devices (id, account_id, name, created) VALUES (3, 7, 'laptop', 0); \
             INSERT INTO snapshots (account_id, id, device_id, time, files, bytes, snapshot_blob, \
             client_version, blobs, created, refs_key) \
             VALUES (7, 'old', 3, 0, 0, 0, x'01', '0.1', 4, 0, 1);",
        )
        .expect("snapshot");
        for n in [1u8, 2, 3, 9] {
            c.execute(
                "INSERT INTO snapshot_refs (account_id, snap, blob_id) VALUES (7, 1, ?1)",
                [&[n; 32][..]],
            )
            .expect("reference");
        }
    }
    let m = SqliteMeta::open(&path).await.expect("migrate");
    let ids: Vec<BlobId> = (1..=4u8).map(|n| BlobId([n; 32])).collect();
    let found = m.blob_locations(7, &ids).await.expect("locations");
    // Rows from before keep their whole hash; new ones keep 16 bytes.
    let at = |key: &str, offset: u64, n: u8, hash_len: usize| {
        Some(BlobLocation {
            object_key: key.into(),
            offset,
            length: 40,
            hash: vec![n; hash_len],
        })
    };
    assert_eq!(
        found,
        vec![
            at("packs/7/one", 0, 1, 32),
            at("packs/7/one", 40, 2, 32),
            at("packs/7/two", 0, 3, 32),
            None
        ]
    );
    let in_one: Vec<BlobId> = m
        .pack_blobs(7, p1)
        .await
        .expect("pack blobs")
        .iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(in_one, ids[..2]);
    let (lost, unindexed) = (BlobId([4; 32]), BlobId([9; 32]));
    let mut damaged = m.damaged_blobs(7).await.expect("damaged");
    damaged.sort_unstable();
    assert_eq!(damaged, [lost, unindexed]);
    assert_eq!(
        m.blobs_missing(7, &[ids.clone(), vec![unindexed]].concat())
            .await
            .expect("missing"),
        [lost, unindexed],
        "a blob whose pack is gone, or that had no row, is uploaded again"
    );
    assert_eq!(
        m.snapshot_refs(7, "old").await.expect("references"),
        [ids[0], ids[1], ids[2], unindexed]
    );
    assert_eq!(
        m.snapshot_damaged(7, "old").await.expect("damaged refs"),
        [unindexed]
    );
    // New packs are numbered after the old ones, and index as before.
    let p4 = PackId([4; 32]);
    let blob = PackBlob {
        id: BlobId([5; 32]),
        kind: BlobKind::Data,
        offset: 0,
        length: 40,
        hash: [5; 32],
    };
    m.pack_insert(7, p4, "packs/7/four", 40, &[blob], None, None)
        .await
        .expect("insert");
    assert_eq!(
        m.blob_locations(7, &[BlobId([5; 32])]).await.expect("new"),
        vec![at("packs/7/four", 0, 5, STORED_HASH_LEN)]
    );
}

/// A database a newer Haven migrated is refused with what to do, instead
/// of being served with tables this code does not know.
#[tokio::test]
async fn a_database_from_a_newer_haven_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("meta.db");
    drop(SqliteMeta::open(&path).await.expect("create"));
    let newer = haven_store::MIGRATIONS.len() as i64 + 1;
    rusqlite::Connection::open(&path)
        .expect("open")
        .pragma_update(None, "user_version", newer)
        .expect("version");
    let err = SqliteMeta::open(&path).await.expect_err("refused");
    let text = err.to_string();
    assert!(text.contains(&format!("schema version {newer}")), "{text}");
    assert!(text.contains("Run that newer version"), "{text}");
}
