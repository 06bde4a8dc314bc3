//! Every input kept for a fuzz target (`fuzz/regressions/<target>/`: the
//! crashes found, once fixed; `fuzz/seeds/<target>/`), and 200 inputs of
//! seeded random bytes per target (30 for `pg_rows`, which runs against
//! `TIDINGS_TEST_POSTGRES_URL` when it is set), run through its oracle: the
//! fuzz targets' invariants hold in every `cargo test --workspace`.

use std::path::Path;

type Oracle = fn(&[u8]);

const TARGETS: [(&str, Oracle); 7] = [
    ("emit", tidings_fuzz::emit),
    ("decode", tidings_fuzz::decode),
    ("stored", tidings_fuzz::stored),
    ("sqlite_rows", tidings_fuzz::sqlite_rows),
    ("nats_message", tidings_fuzz::nats_message),
    ("http_bodies", tidings_fuzz::http_bodies),
    ("pg_rows", tidings_fuzz::pg_rows),
];

/// A small deterministic generator (xorshift64*): the same inputs each run.
fn random_inputs(seed: u64, n: usize) -> Vec<Vec<u8>> {
    let mut state = seed | 1;
    let mut next = || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    (0..n)
        .map(|_| {
            let len = (next() % 512) as usize;
            (0..len).map(|_| next() as u8).collect()
        })
        .collect()
}

#[test]
fn every_kept_input_and_seeded_random_bytes_hold_the_invariants() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (i, (name, oracle)) in TARGETS.iter().enumerate() {
        let mut kept = 0;
        for dir in ["regressions", "seeds"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                oracle(&std::fs::read(&path).unwrap());
                kept += 1;
            }
        }
        let n = if *name == "pg_rows" {
            if std::env::var("TIDINGS_TEST_POSTGRES_URL").is_err() {
                eprintln!("TIDINGS_TEST_POSTGRES_URL unset: pg_rows is not tried");
            }
            30
        } else {
            200
        };
        for input in random_inputs(0x7469_6469_6e67_7300 + i as u64, n) {
            if std::panic::catch_unwind(|| oracle(&input)).is_err() {
                panic!("{name} fails on the input {input:?} (keep it in fuzz/regressions/{name}/ once fixed)");
            }
        }
        eprintln!("{name}: {kept} kept inputs and {n} random ones hold");
    }
}
