//! The restore's write stage on its own (`cargo bench -p haven-client`):
//! files created from their opened chunks by the restore's writer threads,
//! metadata set, renamed into place, as in an empty target; beside it, the
//! same files created and written one after another on one thread, with
//! nothing else done, the least any restore does. Throughput is file data per second.
//!
//! Files go under `HAVEN_BENCH_DIR` (default: the system's temp
//! directory), so figures depend on that file system: a tmpfs leaves out
//! the disk, and shows the CPU the write path costs. The end-to-end
//! restore against `cp -a` is `bench/compare.sh`.
#![allow(clippy::unwrap_used)]

use std::io::Write;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// Files of `size` bytes, each in chunks of at most `chunk` bytes.
type Files = Vec<(String, Vec<Vec<u8>>)>;

fn files(count: usize, size: usize, chunk: usize) -> Files {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    (0..count)
        .map(|i| {
            let data: Vec<u8> = (0..size)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let chunks = data.chunks(chunk).map(<[u8]>::to_vec).collect();
            (format!("file-{i:05}"), chunks)
        })
        .collect()
}

/// An empty directory under `HAVEN_BENCH_DIR`, removed when dropped.
fn empty_dir() -> tempfile::TempDir {
    let base = std::env::var_os("HAVEN_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    tempfile::tempdir_in(base).unwrap()
}

fn write_path(c: &mut Criterion) {
    let cases = [
        ("2000 files of 4 KiB", files(2000, 4 << 10, 1 << 20)),
        ("200 files of 64 KiB", files(200, 64 << 10, 1 << 20)),
        ("2 files of 32 MiB", files(2, 32 << 20, 1 << 20)),
    ];
    let mut g = c.benchmark_group("restore write");
    g.sample_size(20);
    for (name, set) in &cases {
        let bytes: usize = set.iter().flat_map(|(_, c)| c).map(Vec::len).sum();
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_with_input(BenchmarkId::new("haven writers", name), set, |b, set| {
            b.iter_batched(
                || (empty_dir(), set.clone()),
                |(dir, set)| {
                    let n = haven_client::restore::write_stage(dir.path(), set).unwrap();
                    assert_eq!(n as usize, bytes);
                    dir
                },
                BatchSize::PerIteration,
            )
        });
        g.bench_with_input(
            BenchmarkId::new("one thread, std::fs", name),
            set,
            |b, set| {
                b.iter_batched(
                    || (empty_dir(), set.clone()),
                    |(dir, set)| {
                        // Each chunk freed once written, as in any restore.
                        for (file, chunks) in set {
                            let mut f = std::fs::File::create(dir.path().join(file)).unwrap();
                            for c in chunks {
                                f.write_all(&c).unwrap();
                            }
                        }
                        dir
                    },
                    BatchSize::PerIteration,
                )
            },
        );
    }
    g.finish();
}

criterion_group!(benches, write_path);
criterion_main!(benches);
