//! Throughput of each stage of the backup and restore pipeline, in MB/s
//! (`cargo bench -p haven-format`): chunking, blob ids, zstd on its own,
//! sealing (zstd-3 and XChaCha20-Poly1305) of compressible and
//! incompressible data, opening, pack and tree encoding. The restore's
//! write stage is `cargo bench -p haven-client`.
#![allow(clippy::unwrap_used)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use haven_format::blob::{self, BlobKind};
use haven_format::chunker::Chunker;
use haven_format::keys::MasterKey;
use haven_format::pack::PackWriter;
use haven_format::tree::{Node, NodeKind, Timestamp, Tree};
use haven_format::{BlobId, ChunkId};
use serde_bytes::ByteBuf;

fn noise(len: usize, mut s: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        v.extend_from_slice(&s.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Text-like bytes that compress about 3:1.
fn text(len: usize) -> Vec<u8> {
    let words = [
        &b"backup "[..],
        b"restore ",
        b"haven ",
        b"chunk ",
        b"the ",
        b"of\n",
    ];
    let mut v = Vec::with_capacity(len);
    let mut i = 0usize;
    while v.len() < len {
        i = i
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        v.extend_from_slice(words[(i >> 33) % words.len()]);
    }
    v.truncate(len);
    v
}

fn stages(c: &mut Criterion) {
    let keys = MasterKey::generate().keys();
    let stream = noise(64 << 20, 1);

    let mut g = c.benchmark_group("chunk");
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.sample_size(10);
    g.bench_function("fastcdc 64 MiB", |b| {
        b.iter(|| {
            Chunker::new(&stream[..], &keys)
                .map(|c| c.unwrap().len())
                .sum::<usize>()
        })
    });
    g.finish();

    let chunk_n = noise(1 << 20, 2);
    let chunk_t = text(1 << 20);
    let mut g = c.benchmark_group("blob");
    g.throughput(Throughput::Bytes(1 << 20));
    g.bench_function("id 1 MiB", |b| {
        b.iter(|| blob::blob_id(&keys, BlobKind::Data, &chunk_n))
    });
    // Compression alone, as sealing runs it (one context, reused).
    let mut zc = zstd::bulk::Compressor::new(3).unwrap();
    g.bench_function("zstd-3 compress text", |b| {
        b.iter(|| zc.compress(&chunk_t).unwrap())
    });
    let packed = zstd::bulk::compress(&chunk_t, 3).unwrap();
    let mut zd = zstd::bulk::Decompressor::new().unwrap();
    g.bench_function("zstd decompress text", |b| {
        b.iter(|| zd.decompress(&packed, 1 << 20).unwrap())
    });
    for (name, data) in [("random", &chunk_n), ("text", &chunk_t)] {
        let id = blob::blob_id(&keys, BlobKind::Data, data);
        g.bench_with_input(BenchmarkId::new("seal zstd-3", name), data, |b, d| {
            b.iter(|| blob::seal(&keys, BlobKind::Data, &id, d, 3).unwrap())
        });
        let sealed = blob::seal(&keys, BlobKind::Data, &id, data, 3).unwrap();
        g.bench_with_input(BenchmarkId::new("open", name), &sealed, |b, s| {
            b.iter(|| blob::open(&keys, BlobKind::Data, &id, s).unwrap())
        });
    }
    g.finish();

    let mut g = c.benchmark_group("pack");
    g.throughput(Throughput::Bytes(16 << 20));
    g.sample_size(20);
    let sealed = noise(1 << 20, 3);
    g.bench_function("write 16 MiB", |b| {
        b.iter(|| {
            let mut w = PackWriter::new();
            for i in 0..16u8 {
                w.add(BlobKind::Data, BlobId([i; 32]), &sealed);
            }
            w.finish()
        })
    });
    g.finish();

    let nodes: Vec<Node> = (0..1000)
        .map(|i| Node {
            name: ByteBuf::from(format!("file-{i:05}.txt").into_bytes()),
            kind: NodeKind::File,
            mode: 0o644,
            uid: 1000,
            gid: 1000,
            mtime: Timestamp {
                secs: 1_700_000_000 + i,
                nanos: 1,
            },
            ctime: Timestamp {
                secs: 1_700_000_000 + i,
                nanos: 2,
            },
            dev: 2049,
            ino: 1_000_000 + i as u64,
            nlink: 1,
            size: 4096,
            content: vec![ChunkId(BlobId([i as u8; 32]))],
            subtree: None,
            target: None,
        })
        .collect();
    let tree = Tree { nodes };
    let encoded = tree.encode();
    let mut g = c.benchmark_group("tree");
    g.throughput(Throughput::Bytes(encoded.len() as u64));
    g.bench_function("encode 1000 entries", |b| b.iter(|| tree.encode()));
    g.bench_function("decode 1000 entries", |b| {
        b.iter(|| Tree::decode(&encoded).unwrap())
    });
    g.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
