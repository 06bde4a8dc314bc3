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
//!
//! [`poison`] uses the same child test the other way round: there the
//! handler kills the process itself (`std::process::abort`, as an
//! out-of-memory kill or a crash in a C library would), on one event, in
//! every process that takes it; the parent starts the child again after each
//! abort, and the delivery must end as a dead letter after a bounded number
//! of them, while the other handler of the event handles it.

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

/// Set (to `emit` for the first child, `resume` for the others) when the
/// child is one of [`poison`]'s.
const POISON: &str = "TIDINGS_CRASH_CHILD_POISON";

/// Attempts of the handler that aborts the process.
const POISON_ATTEMPTS: u32 = 2;

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
    if let Ok(mode) = std::env::var(POISON) {
        return poison_child(open, mode == "emit");
    }
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
        let dead: Vec<(u32, String)> = bus
            .dead_letters()
            .into_iter()
            .map(|d| (d.attempts, d.error))
            .collect();
        assert!(dead.is_empty(), "dead letters (attempts, error): {dead:?}");
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

/// Prints one line for the parent at once (the process may abort next).
fn say(line: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

/// Aborts the process on every attempt, after printing `S <attempt>`.
struct Abort;

impl EventHandler for Abort {
    fn event_type(&self) -> &str {
        "poison"
    }
    fn name(&self) -> &str {
        "abort"
    }
    fn options(&self) -> HandlerOptions {
        HandlerOptions::default()
            .attempts(POISON_ATTEMPTS)
            .backoff(tidings::Backoff::fixed(Duration::from_millis(1)))
    }
    async fn handle(&self, event: &Envelope) -> Result<(), HandlerError> {
        say(format_args!("S {}", event.attempt()));
        std::process::abort()
    }
}

/// The other handler of the poison event: prints `F` when it handled it.
struct Fine;

impl EventHandler for Fine {
    fn event_type(&self) -> &str {
        "poison"
    }
    fn name(&self) -> &str {
        "fine"
    }
    async fn handle(&self, _: &Envelope) -> Result<(), HandlerError> {
        say(format_args!("F"));
        Ok(())
    }
}

/// A child of [`poison`]: emits the poison event if `emit`, then waits until
/// it is a dead letter (printing `D <attempts> <error>`), shuts down and
/// prints `E`, unless the handler aborts the process first.
fn poison_child<S: Store, F: Future<Output = S>>(open: impl FnOnce() -> F, emit: bool) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let bus = EventBus::builder()
            .discover(false)
            .handler(Abort)
            .handler(Fine)
            .store(open().await)
            .build()
            .unwrap();
        if emit {
            bus.emit("poison", serde_json::json!({})).await.unwrap();
            say(format_args!("A"));
        }
        let dead = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                if let Some(d) = bus.dead_letters().into_iter().next() {
                    return d;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the poison event was dead-lettered or aborted the process");
        say(format_args!("D {} {}", dead.attempts, dead.error));
        assert!(bus.shutdown(Duration::from_secs(10)).await.is_clean());
        say(format_args!("E"));
    });
}

/// The parent of the poison test: runs `child_test` (with `env` added)
/// again and again, each child taking the event whose handler aborts the
/// process, until one ends normally. Checks that the delivery was
/// dead-lettered after exactly `attempts + 1` aborts (the first crash of a
/// fresh delivery is free; each later attempt is marked begun in the store
/// before it runs, and one marked and never ended counts as failed), that
/// its attempts went 1, 1, 2, and that the other handler of the event
/// handled it.
///
/// # Panics
/// When the delivery is made again after its attempts are spent, is lost,
/// or the children do not behave as above.
pub fn poison(child_test: &str, env: &[(&str, &str)]) {
    use std::os::unix::process::ExitStatusExt;
    let mut begun = Vec::new();
    let mut aborts = 0;
    let mut fine = 0;
    for run in 0..6 {
        let mode = if run == 0 { "emit" } else { "resume" };
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                child_test,
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .envs(env.iter().copied())
            .env(POISON, mode)
            .stderr(Stdio::null())
            .output()
            .expect("the child runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text
            .lines()
            .map(|l| l.rsplit_once("... ").map_or(l, |(_, l)| l))
            .collect();
        begun.extend(
            lines
                .iter()
                .filter_map(|l| l.strip_prefix("S ")?.parse::<u32>().ok()),
        );
        fine += lines.iter().filter(|l| **l == "F").count();
        if out.status.signal() == Some(6) {
            aborts += 1;
            continue;
        }
        assert!(
            out.status.success(),
            "child {run} failed: {:?}\n{text}",
            out.status
        );
        let dead = lines
            .iter()
            .find_map(|l| l.strip_prefix("D "))
            .expect("the child that ended saw the dead letter");
        eprintln!("poison: {aborts} aborts, attempts begun {begun:?}, dead letter: {dead}");
        assert_eq!(aborts, POISON_ATTEMPTS + 1, "aborts before the dead letter");
        assert_eq!(begun, [1, 1, 2], "attempts begun, in order");
        assert!(
            dead.starts_with(&format!("{POISON_ATTEMPTS} "))
                && dead.contains(&format!("stopped during attempt {POISON_ATTEMPTS}")),
            "{dead}"
        );
        assert!(fine >= 1, "the other handler handled the event");
        assert!(lines.contains(&"E"), "the last child shut down cleanly");
        return;
    }
    panic!("still aborting after 6 runs: attempts begun {begun:?}");
}
