//! Kill -9 at random: a durable bus loses nothing that `emit` acknowledged.
//!
//! A backend's test binary holds two tests: an ignored one that calls
//! [`child`] (it is the child process, not a test of its own), and one that
//! calls [`parent`]. The parent runs its own binary again as the child, which
//! emits from sixteen tasks (half of them with a key each) and handles with a handler slower than the
//! emitters (so that many acknowledged events are pending at any moment),
//! printing `A <n>` after each acknowledged emit and `H <n>` as each delivery
//! is handled. The parent kills it with SIGKILL at a random moment, several
//! times over the same storage, then builds a bus itself and drains what is
//! left. Every acknowledged event must have been handled by one of them.

use std::collections::BTreeSet;
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tidings::{Envelope, EventBus, EventHandler, HandlerError, HandlerOptions, Store};

/// Emitting tasks in the child: enough that a store with a slow commit
/// (a network round trip) still has many acknowledged events pending.
const EMITTERS: u64 = 16;

/// Where the child's numbers start (each round its own range).
const BASE: &str = "TIDINGS_CRASH_CHILD_BASE";

/// Handles `crash` events by printing (in the child) or recording (in the
/// parent) their number.
struct Sink(Option<Arc<Mutex<BTreeSet<u64>>>>);

impl EventHandler for Sink {
    fn event_type(&self) -> &str {
        "crash"
    }
    fn name(&self) -> &str {
        "sink"
    }
    fn options(&self) -> HandlerOptions {
        HandlerOptions::default().concurrency(4)
    }
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        let n = event.data()["n"]
            .as_u64()
            .ok_or_else(|| HandlerError::permanent("no n"))?;
        match &self.0 {
            Some(set) => {
                set.lock().unwrap().insert(n);
            }
            None => {
                tokio::time::sleep(Duration::from_millis(1)).await;
                let mut out = std::io::stdout().lock();
                writeln!(out, "H {n}").map_err(HandlerError::retryable)?;
                out.flush().map_err(HandlerError::retryable)?;
            }
        }
        Ok(())
    }
}

/// The child process: opens the store with `open`, then emits until killed.
///
/// # Panics
/// When not run by [`parent`].
pub fn child<S: Store, F: Future<Output = S>>(open: impl FnOnce() -> F) {
    let base: u64 = std::env::var(BASE)
        .expect("run by tidings_conformance::crash::parent")
        .parse()
        .expect("a number");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let store = open().await;
        let bus = EventBus::builder()
            .discover(false)
            .capacity(2_000)
            .handler(Sink(None))
            .store(store)
            .build()
            .unwrap();
        let mut tasks = Vec::new();
        for t in 0..EMITTERS {
            let bus = bus.clone();
            tasks.push(tokio::spawn(async move {
                // Half the tasks emit with a key each: keyed deliveries
                // take other paths in some stores (NATS key partitions).
                let key = (t % 2 == 0).then(|| format!("k{t}"));
                for i in 0.. {
                    let n = base + i * EMITTERS + t;
                    let emit = bus.emit("crash", serde_json::json!({ "n": n }));
                    match &key {
                        Some(k) => emit.key(k.clone()).await.unwrap(),
                        None => emit.await.unwrap(),
                    };
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "A {n}").unwrap();
                    out.flush().unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[derive(Default)]
struct Seen {
    acked: BTreeSet<u64>,
    handled: BTreeSet<u64>,
    handled_twice: usize,
}

fn run_child_and_kill(
    child_test: &str,
    env: &[(&str, &str)],
    base: u64,
    after: Duration,
    seen: &Mutex<Seen>,
) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            child_test,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .envs(env.iter().copied())
        .env(BASE, base.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the child starts");
    let stdout = child.stdout.take().unwrap();
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // The harness's "test <name> ... " has no line of its own.
                let line = line.rsplit_once("... ").map_or(line.as_str(), |(_, l)| l);
                let mut seen = seen.lock().unwrap();
                if let Some(n) = line.strip_prefix("A ").and_then(|n| n.parse().ok()) {
                    seen.acked.insert(n);
                } else if let Some(n) = line.strip_prefix("H ").and_then(|n| n.parse().ok()) {
                    if !seen.handled.insert(n) {
                        seen.handled_twice += 1;
                    }
                }
            }
        });
        std::thread::sleep(after);
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        reader.join().unwrap();
    });
}

/// The parent: kills `child_test` (run with `env` added) at random `rounds`
/// times, then drains the storage with a store from `open` and checks that
/// nothing acknowledged was lost. `settle` is how long the draining bus may
/// take to find what was left (zero for stores that recover everything at
/// start; a lease and a relay tick for a store whose relay claims the
/// deliveries of dead processes).
///
/// # Panics
/// When an acknowledged event was lost (the test's failure), or when the
/// children acknowledged too little to tell.
pub fn parent<S: Store, F: Future<Output = S>>(
    child_test: &str,
    env: &[(&str, &str)],
    rounds: u64,
    settle: Duration,
    open: impl FnOnce() -> F,
) {
    use rand::Rng;
    let seen = Mutex::new(Seen::default());
    let mut rng = rand::rng();
    for round in 0..rounds {
        // Long enough for the child to start and emit; random so that the
        // kill lands anywhere in the emit/handle/record cycle.
        let after = Duration::from_millis(rng.random_range(300..900));
        run_child_and_kill(child_test, env, round * 1_000_000_000, after, &seen);
    }
    let recovered = Arc::new(Mutex::new(BTreeSet::new()));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let bus = EventBus::builder()
            .discover(false)
            .handler(Sink(Some(recovered.clone())))
            .store(open().await)
            .build()
            .unwrap();
        tokio::time::sleep(settle).await;
        tokio::time::timeout(Duration::from_secs(60), bus.wait_idle())
            .await
            .expect("the recovered deliveries drain");
        assert!(bus.shutdown(Duration::from_secs(5)).await.is_clean());
        assert!(bus.dead_letters().is_empty());
    });
    let seen = seen.into_inner().unwrap();
    let recovered = recovered.lock().unwrap();
    let lost: Vec<u64> = seen
        .acked
        .iter()
        .filter(|n| !seen.handled.contains(n) && !recovered.contains(n))
        .copied()
        .collect();
    eprintln!(
        "{rounds} kills: {} acknowledged, {} handled before the kills ({} twice), {} after",
        seen.acked.len(),
        seen.handled.len(),
        seen.handled_twice,
        recovered.len()
    );
    assert!(
        seen.acked.len() > 1_000,
        "the children emitted too little to tell: {}",
        seen.acked.len()
    );
    assert!(
        lost.is_empty(),
        "{} acknowledged events were lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
}
