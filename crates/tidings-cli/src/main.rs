//! `tidings`: the demo service (the default) and its load generator.

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::time::Duration;
use tidings_cli::{backends, bench, demo, load};

// A service binary's allocator: mimalloc handles the bus's pattern (allocated on
// the emitting thread, freed on a worker) far better than glibc's malloc. Built
// with `no_thp`: on this kernel, transparent huge pages made mimalloc's fresh
// memory fault in 2 MiB at a time, stalling an emit for 4-7 ms every few
// thousand events of a burst. See docs/BENCHMARKS.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tidings",
    version,
    about = "Tidings: the demo event-driven chat service and tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the demo chat-assistant service (the default).
    Serve(ServeArgs),
    /// Drive a running demo service with concurrent chat requests and report latency.
    Load(LoadArgs),
    /// Measure Tidings against the seed's design (Python) and the raw ceiling, in one run.
    Bench(BenchArgs),
    /// Show what a bus holds: pending deliveries and dead letters by event type
    /// and handler (never their data); a stopped service's SQLite file, or a
    /// PostgreSQL or NATS JetStream bus name (live too).
    Inspect(InspectArgs),
    /// Delete everything a PostgreSQL or NATS JetStream bus name holds: its
    /// events, pending deliveries and dead letters. For decommissioning a
    /// bus; no process may be using it.
    Purge(PurgeArgs),
    /// Remove from a shared PostgreSQL or NATS JetStream bus the handlers no
    /// process has had for a while (renamed or removed from the code): their
    /// waiting deliveries become dead letters first. Lists them without `--yes`.
    Prune(PruneArgs),
    /// Finish a rolling upgrade of a PostgreSQL or NATS JetStream bus name:
    /// what the processes of the new version could not do while those of
    /// the version before shared the bus (on NATS, a bus made before
    /// 2026-12-05 gets its events framed, without headers). Says what is
    /// left without `--yes`; run it with `--yes` once every process runs
    /// this version.
    Upgrade(UpgradeArgs),
    /// The demo's users: add one, give one a new token, or list them (the
    /// demo's database, `--db`; a token is shown once, when it is made).
    Users(UsersArgs),
    /// A running service's bus: handlers' figures and the queue (its admin API).
    Stats(StatsArgs),
    /// A running service's dead letters: list, replay or discard them, by
    /// id or by filter (its admin API). Exit codes: 0 done, 1 failure, 2
    /// usage, 3 token refused, 4 service unreachable, 5 some not done.
    #[command(subcommand)]
    DeadLetters(DeadLettersCommand),
    /// A running service's events as they happen: each emit and each
    /// delivery's outcome, metadata only (its admin API).
    Tail(TailArgs),
}

/// Where a running service's admin API is.
#[derive(clap::Args)]
struct RemoteArgs {
    /// The service's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "TIDINGS_URL")]
    url: String,
    /// The admin token.
    #[arg(long, env = "TIDINGS_ADMIN_TOKEN", hide_env_values = true)]
    token: String,
}

impl RemoteArgs {
    fn remote(&self) -> tidings_cli::remote::Remote {
        tidings_cli::remote::Remote::new(&self.url, &self.token)
    }
}

#[derive(clap::Args)]
struct StatsArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct TailArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum DeadLettersCommand {
    /// Lists the dead letters the filter matches (never their data).
    List {
        #[command(flatten)]
        remote: RemoteArgs,
        #[command(flatten)]
        filter: tidings_cli::remote::Filter,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Hands dead letters to their handlers again: the ids given, or all the filter matches.
    Replay(BulkArgs),
    /// Deletes dead letters for good: the ids given, or all the filter matches.
    Discard(BulkArgs),
}

#[derive(clap::Args)]
struct BulkArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    #[command(flatten)]
    filter: tidings_cli::remote::Filter,
    /// These dead letters (repeat the flag), instead of a filter.
    #[arg(long = "id")]
    ids: Vec<u64>,
    /// Only count what would be touched.
    #[arg(long)]
    dry_run: bool,
}

async fn remote_command(command: Command) -> Result<(), tidings_cli::remote::RemoteError> {
    use std::io::IsTerminal;
    let progress = std::io::stderr().is_terminal();
    match command {
        Command::Stats(a) => a.remote.remote().stats(a.json).await,
        Command::Tail(a) => a.remote.remote().tail(a.json).await,
        Command::DeadLetters(DeadLettersCommand::List {
            remote,
            filter,
            json,
        }) => remote.remote().list(&filter, json).await,
        Command::DeadLetters(DeadLettersCommand::Replay(a)) => {
            a.remote
                .remote()
                .bulk("replay", &a.ids, &a.filter, a.dry_run, progress)
                .await
        }
        Command::DeadLetters(DeadLettersCommand::Discard(a)) => {
            a.remote
                .remote()
                .bulk("discard", &a.ids, &a.filter, a.dry_run, progress)
                .await
        }
        _ => Ok(()),
    }
}

#[derive(clap::Args)]
struct UsersArgs {
    /// The demo's database URL.
    #[arg(
        long,
        default_value = "sqlite:tidings-demo.db",
        env = "TIDINGS_DATABASE_URL"
    )]
    db: String,
    #[command(subcommand)]
    action: UsersAction,
}

#[derive(Subcommand)]
enum UsersAction {
    /// Adds a user with a clearance (PUBLIC, INTERNAL, CONFIDENTIAL, SECRET)
    /// and prints its token.
    Add {
        /// 1 to 32 characters of a-z, 0-9, _ and -.
        name: String,
        /// What the user may read.
        #[arg(long)]
        clearance: String,
    },
    /// Gives a user a new token (the old one stops working) and prints it.
    ResetToken {
        /// The user's name.
        name: String,
    },
    /// Lists the users and their clearances (never a token).
    List,
}

async fn users(args: &UsersArgs) -> anyhow::Result<()> {
    let store = demo::open_store(&args.db).await?;
    let tidings_events::Db::Sqlite(db) = &store else {
        anyhow::bail!("the demo's database is SQLite");
    };
    match &args.action {
        UsersAction::Add { name, clearance } => {
            let clearance = demo::Clearance::parse(clearance).ok_or_else(|| {
                anyhow::anyhow!("--clearance is PUBLIC, INTERNAL, CONFIDENTIAL or SECRET")
            })?;
            println!("{}", demo::users::add(db, name, clearance).await?);
        }
        UsersAction::ResetToken { name } => {
            println!("{}", demo::users::reset_token(db, name).await?);
        }
        UsersAction::List => {
            for (name, clearance) in demo::users::list(db).await? {
                println!("user {name} ({clearance})");
            }
        }
    }
    Ok(())
}

/// Where a bus is, for the commands that operate one from outside.
#[derive(clap::Args)]
struct BusAt {
    /// The bus is in this PostgreSQL database.
    #[arg(long, required_unless_present = "nats", conflicts_with = "nats")]
    postgres: Option<String>,
    /// The bus is on this NATS JetStream server.
    #[arg(long)]
    nats: Option<String>,
    /// The bus name.
    #[arg(long)]
    bus: String,
}

impl BusAt {
    /// The server's URL.
    fn url(&self) -> anyhow::Result<&str> {
        match self.postgres.as_deref().or(self.nats.as_deref()) {
            Some(url) => Ok(url),
            None => anyhow::bail!("--postgres URL or --nats URL"),
        }
    }
}

#[derive(clap::Args)]
struct PruneArgs {
    #[command(flatten)]
    at: BusAt,
    /// How long a handler must have gone without a process (`90m`, `7d`;
    /// at least a minute).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "7d")]
    unused_for: Duration,
    /// Removes them (without it, only lists them).
    #[arg(long)]
    yes: bool,
}

async fn prune(args: &PruneArgs) -> anyhow::Result<()> {
    let (url, bus) = (args.at.url()?, &args.at.bus);
    let (_, admin) = backends::admin_for(url)?;
    let shown = redacted(url);
    let registered = admin
        .registrations(bus)
        .await
        .map_err(|e| anyhow::anyhow!("cannot read bus {bus} on {shown}: {e}"))?;
    let cutoff = std::time::SystemTime::now() - args.unused_for;
    let unused: Vec<_> = registered.iter().filter(|r| r.last_seen < cutoff).collect();
    if !args.yes {
        println!(
            "{} of {} handlers of bus {bus} had no process for {}:",
            unused.len(),
            registered.len(),
            humantime::format_duration(args.unused_for)
        );
        for r in &unused {
            println!(
                "  {} ({}): last seen {}, {} deliveries waiting",
                r.handler,
                r.event_type,
                humantime::format_rfc3339_seconds(r.last_seen),
                r.pending
            );
        }
        if !unused.is_empty() {
            println!("run again with --yes to remove them (their waiting deliveries become dead letters)");
        }
        return Ok(());
    }
    let pruned = admin
        .prune(bus, args.unused_for)
        .await
        .map_err(|e| anyhow::anyhow!("cannot prune bus {bus}: {e}"))?;
    for p in &pruned {
        println!(
            "pruned {} ({}): {} deliveries kept as dead letters",
            p.handler, p.event_type, p.dead_lettered
        );
    }
    println!("{} handlers pruned from bus {bus}", pruned.len());
    Ok(())
}

#[derive(clap::Args)]
struct UpgradeArgs {
    #[command(flatten)]
    at: BusAt,
    /// Does it (without it, only says what is left). Only once no process of
    /// an earlier version uses the bus.
    #[arg(long)]
    yes: bool,
}

async fn upgrade(args: &UpgradeArgs) -> anyhow::Result<()> {
    let (url, bus) = (args.at.url()?, &args.at.bus);
    let (what, admin) = backends::admin_for(url)?;
    let failed = |e: tidings::StoreError| {
        anyhow::anyhow!("cannot upgrade bus {bus} on {}: {e}", redacted(url))
    };
    if !args.yes {
        match admin.upgrade_left(bus).await.map_err(failed)? {
            Some(left) => println!(
                "bus {bus} on {what}: {left}; run again with --yes once no process of an \
                 earlier version uses it"
            ),
            None => println!("bus {bus} on {what}: nothing left to upgrade"),
        }
        return Ok(());
    }
    match admin.finish_upgrade(bus).await.map_err(failed)? {
        Some(done) => println!("bus {bus} on {what}: {done}"),
        None => println!("bus {bus} on {what}: nothing left to upgrade"),
    }
    Ok(())
}

#[derive(clap::Args)]
struct PurgeArgs {
    #[command(flatten)]
    at: BusAt,
    /// Confirms the deletion (nothing is deleted without it).
    #[arg(long)]
    yes: bool,
}

async fn purge(args: &PurgeArgs) -> anyhow::Result<()> {
    let (url, bus) = (args.at.url()?, &args.at.bus);
    let (what, admin) = backends::admin_for(url)?;
    if !args.yes {
        anyhow::bail!(
            "this deletes every event, pending delivery and dead letter of bus {bus} on {what}; \
             run again with --yes"
        );
    }
    admin
        .purge(bus)
        .await
        .map_err(|e| anyhow::anyhow!("cannot purge bus {bus}: {e}"))?;
    println!("bus {bus} purged from {what}");
    Ok(())
}

#[derive(clap::Args)]
struct InspectArgs {
    /// The bus file.
    #[arg(long, default_value = "tidings-bus.db", env = "TIDINGS_BUS_FILE")]
    bus_file: std::path::PathBuf,
    /// Inspect a bus in PostgreSQL instead (with --bus); works while it runs.
    #[arg(long, requires = "bus", conflicts_with = "nats")]
    postgres: Option<String>,
    /// Inspect a bus on NATS JetStream instead (with --bus); works while it runs.
    #[arg(long, requires = "bus")]
    nats: Option<String>,
    /// The bus name (PostgreSQL or NATS).
    #[arg(long)]
    bus: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

async fn inspect(args: &InspectArgs) -> anyhow::Result<()> {
    let remote = match (args.postgres.as_ref().or(args.nats.as_ref()), &args.bus) {
        (Some(url), Some(bus)) => Some((backends::admin_for(url)?.1, bus)),
        _ => None,
    };
    let summary = match &remote {
        Some((admin, bus)) => admin
            .summarize(bus)
            .await
            .map_err(|e| anyhow::anyhow!("cannot read bus {bus}: {e}"))?,
        None => tidings_sqlite::summarize(&args.bus_file).map_err(|e| {
            anyhow::anyhow!(
                "cannot read {}: {e}{}",
                args.bus_file.display(),
                if matches!(e, tidings::StoreError::Locked(_)) {
                    " (stop the service first: a running bus holds its file)"
                } else {
                    ""
                }
            )
        })?,
    };
    let rows = |counts: &[tidings::store::Count]| -> Vec<serde_json::Value> {
        counts
            .iter()
            .map(|c| {
                serde_json::json!({
                    "event_type": c.event_type,
                    "handler": c.handler,
                    "count": c.count,
                    "oldest": chrono::DateTime::<chrono::Utc>::from(c.oldest).to_rfc3339(),
                })
            })
            .collect()
    };
    // A PostgreSQL bus name shared by processes: its registered handlers.
    let registrations = match &remote {
        Some((admin, bus)) => admin.registrations(bus).await.unwrap_or_default(),
        None => Vec::new(),
    };
    // What a rolling upgrade left to do (`tidings upgrade`).
    let upgrade_left = match &remote {
        Some((admin, bus)) => admin.upgrade_left(bus).await.unwrap_or_default(),
        None => None,
    };
    if args.json {
        let out = serde_json::json!({
            "pending": rows(&summary.pending),
            "dead_letters": rows(&summary.dead_letters),
            "handlers": registrations,
            "upgrade_left": upgrade_left,
        });
        println!("{out}");
        return Ok(());
    }
    if let Some(left) = &upgrade_left {
        println!(
            "upgrade left: {left} (`tidings upgrade ... --yes` once no process of an earlier \
             version uses the bus)"
        );
    }
    if !registrations.is_empty() {
        println!("handlers (pending, last seen): {}", registrations.len());
        for r in &registrations {
            println!(
                "  {:<24} {:<32} {:>8}  last seen {}",
                r.event_type,
                r.handler,
                r.pending,
                humantime::format_rfc3339_seconds(r.last_seen)
            );
        }
    }
    for (title, counts) in [
        ("pending deliveries", &summary.pending),
        ("dead letters", &summary.dead_letters),
    ] {
        let total: u64 = counts.iter().map(|c| c.count).sum();
        println!("{title}: {total}");
        for c in counts {
            println!(
                "  {:<24} {:<32} {:>8}  oldest {}",
                c.event_type,
                c.handler,
                c.count,
                chrono::DateTime::<chrono::Utc>::from(c.oldest).to_rfc3339()
            );
        }
    }
    Ok(())
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Runs per figure (the median is reported, with min and max).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Events per throughput run.
    #[arg(long, default_value_t = 300_000)]
    events: usize,
    /// Pending events in the memory runs.
    #[arg(long, default_value_t = 1_000_000)]
    pending: usize,
    /// The Python interpreter for the reference implementation.
    #[arg(long, default_value = "python3")]
    python: String,
    /// Skip the Python reference.
    #[arg(long)]
    no_python: bool,
    /// The reference implementation.
    #[arg(long, default_value = "benches/python/seed_bus.py")]
    python_script: std::path::PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Write the table into this Markdown file, between its tidings-bench markers.
    #[arg(long)]
    write_docs: Option<std::path::PathBuf>,
    /// Run only these scenarios (1 to 7; repeat the flag for several).
    #[arg(long)]
    only: Vec<String>,
    /// Add scenario 6's and 7's PostgreSQL rows, against this server (a fresh bus name per run).
    #[arg(long, env = "TIDINGS_BENCH_POSTGRES_URL")]
    postgres: Option<String>,
    /// Add scenario 6's and 7's NATS JetStream rows, against this server (a fresh bus name per run, purged after).
    #[arg(long, env = "TIDINGS_BENCH_NATS_URL")]
    nats: Option<String>,
    /// Key partitions of scenario 6's NATS bus (`tidings_nats::Options::key_partitions`)
    /// and of its raw keyed ceiling.
    #[arg(long, default_value_t = tidings_nats::Options::default().key_partitions)]
    nats_key_partitions: u32,
    /// Hand scenario 6's and 7's NATS key partitions out one delivery at a
    /// time (`tidings_nats::Options::pin_key_partitions(false)`) instead of
    /// pinning each to one process at a time (the default; nats-server 2.11
    /// or later).
    #[arg(long)]
    nats_one_at_a_time: bool,
    /// Pinned key partitions are the default now: this flag changes nothing
    /// (kept so that the commands of older BENCHMARKS.md sections run).
    #[arg(long, hide = true, conflicts_with = "nats_one_at_a_time")]
    nats_pin_key_partitions: bool,
    /// Internal: measure memory in this fresh process and print bytes per event.
    #[arg(long, hide = true)]
    memory_probe: Option<String>,
    /// Internal: be one of scenario 7's worker processes, on this store URL.
    #[arg(long, hide = true, requires_all = ["scale_store", "scale_bus"])]
    scale_worker: Option<String>,
    /// Internal: the worker's store kind (nats or postgres).
    #[arg(long, hide = true)]
    scale_store: Option<String>,
    /// Internal: the worker's bus name.
    #[arg(long, hide = true)]
    scale_bus: Option<String>,
    /// Internal: the worker's NATS key partitions pinned.
    #[arg(long, hide = true)]
    scale_pin: bool,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080", env = "TIDINGS_ADDR")]
    addr: SocketAddr,
    /// Database URL; a SQLite file in the working directory by default.
    #[arg(
        long,
        default_value = "sqlite:tidings-demo.db",
        env = "TIDINGS_DATABASE_URL"
    )]
    db: String,
    /// Save chat messages inside the request instead of in the background (to measure the difference).
    #[arg(long)]
    inline_saves: bool,
    /// The durable bus's SQLite file: events are written here before `emit`
    /// returns, and what was pending when the service stopped (or was killed)
    /// is delivered at the next start.
    #[arg(long, default_value = "tidings-bus.db", env = "TIDINGS_BUS_FILE")]
    bus_file: std::path::PathBuf,
    /// Keep the bus in memory instead (faster; pending events are lost on a crash).
    #[arg(long, conflicts_with_all = ["nats", "postgres"])]
    memory_bus: bool,
    /// Put the bus on this NATS JetStream server instead: every demo process
    /// started with the same `--nats` and `--bus-name` shares the handlers' work.
    #[arg(long, env = "TIDINGS_NATS_URL", conflicts_with = "postgres")]
    nats: Option<String>,
    /// Put the bus on this PostgreSQL database instead, shared
    /// (`PgStore::connect_shared`): every demo process started with the same
    /// `--postgres` and `--bus-name` shares the handlers' work. The demo's own
    /// data stays in `--db`.
    #[arg(long, env = "TIDINGS_POSTGRES_URL")]
    postgres: Option<String>,
    /// The bus's name on the NATS or PostgreSQL server.
    #[arg(long, default_value = "demo")]
    bus_name: String,
    /// The admin token (the admin API at /admin/api/, and /api/activity):
    /// at least 16 printable characters. Without it, a fresh one is made and
    /// printed once at start.
    #[arg(long, env = "TIDINGS_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
}

impl Default for ServeArgs {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:8080".parse().expect("valid address"),
            db: "sqlite:tidings-demo.db".into(),
            inline_saves: false,
            bus_file: "tidings-bus.db".into(),
            memory_bus: false,
            nats: None,
            postgres: None,
            bus_name: "demo".into(),
            admin_token: std::env::var("TIDINGS_ADMIN_TOKEN").ok(),
        }
    }
}

#[derive(clap::Args)]
struct LoadArgs {
    /// The service's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Seconds to measure.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seconds of warm-up before measuring.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Requests per second in all (default: as fast as answers come back).
    #[arg(long)]
    rate: Option<f64>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// A user token to send as (repeat for several users: the clients take
    /// them in turn). The first start of the demo prints one per user.
    #[arg(long, required = true, env = "TIDINGS_USER_TOKEN")]
    token: Vec<String>,
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    eprintln!("\nstopping: draining the event bus...");
}

/// A URL as it may be printed: its password replaced by `***`.
fn redacted(url: &str) -> String {
    tidings::redact::redact_url(url)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let (admin_token, generated) = match args.admin_token.clone() {
        Some(token) => (token, false),
        None => (demo::generated_token(), true),
    };
    let admin = tidings_admin::AdminConfig::new(&admin_token)
        .map_err(|e| anyhow::anyhow!("TIDINGS_ADMIN_TOKEN: {e}"))?;
    // Before the bus, so that every figure it records is exported.
    let metrics = tidings_admin::prometheus()
        .map_err(|e| anyhow::anyhow!("cannot install the Prometheus recorder: {e}"))?;
    let store = demo::open_store(&args.db).await?;
    let issued = match &store {
        tidings_events::Db::Sqlite(db) => demo::users::seed(db).await?,
        _ => Vec::new(),
    };
    let mut builder = demo::bus_builder(&store);
    let bus_kind = if args.memory_bus {
        "in memory".to_owned()
    } else if let Some(url) = args.nats.as_ref().or(args.postgres.as_ref()) {
        let (with_store, kind) = backends::shared_bus(builder, url, &args.bus_name)
            .await
            .map_err(|e| {
                let shown = redacted(url);
                anyhow::anyhow!("cannot open bus {} on {shown}: {e}", args.bus_name)
            })?;
        builder = with_store;
        format!("shared, {kind} {}, bus {}", redacted(url), args.bus_name)
    } else {
        let file = tidings_sqlite::SqliteStore::open(&args.bus_file).map_err(|e| {
            anyhow::anyhow!("cannot open the bus file {}: {e}", args.bus_file.display())
        })?;
        builder = builder.store(file);
        format!("durable, {}", args.bus_file.display())
    };
    let bus = tidings::init(builder)?;
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    let addr = listener.local_addr()?;
    println!(
        "tidings demo listening on http://{addr} (database: {}; event bus: {bus_kind})",
        args.db.split('?').next().unwrap_or_default()
    );
    if bus.pending() > 0 {
        println!(
            "delivering {} events left pending by the last run",
            bus.pending()
        );
    }
    println!("event types: {}", bus.event_types().join(", "));
    for user in &issued {
        println!("{user}");
    }
    let token = issued.first().map_or_else(
        || "<a user token: printed at the first start; tidings users reset-token alice>".to_owned(),
        |u| u.token.clone(),
    );
    println!("try:");
    println!(
        "  curl -s http://{addr}/api/chat -H 'authorization: Bearer {token}' -H 'content-type: application/json' \
         -d '{{\"conversation_id\": \"demo-1\", \"message\": \"How do I reset my password?\"}}'"
    );
    if generated {
        println!(
            "admin token: {admin_token} (made for this run; set TIDINGS_ADMIN_TOKEN to choose one)"
        );
    }
    println!("dashboard: http://{addr}/admin (the admin token); admin API: http://{addr}/admin/api/overview (Authorization: Bearer <admin token>); metrics: http://{addr}/metrics");
    let mut state = demo::state(bus.clone(), store, args.inline_saves, admin);
    state.metrics = Some(metrics);
    let report = demo::serve(listener, state, Duration::from_secs(10), shutdown_signal()).await?;
    let handled: u64 = bus
        .stats()
        .handlers
        .iter()
        .map(|h| h.succeeded + h.dead_lettered)
        .sum();
    println!(
        "event bus drained: {} deliveries finished during shutdown ({handled} since start), {} abandoned{}",
        report.finished,
        report.abandoned.len(),
        match (report.is_clean(), report.kept) {
            (true, _) => "",
            (false, true) => " (kept in the bus file: delivered at the next start)",
            (false, false) => " (see the log for their ids)",
        }
    );
    for a in &report.abandoned {
        tracing::warn!(event_id = %a.event_id, handler = %a.handler, "abandoned at shutdown");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let default_filter = if matches!(cli.command, Some(Command::Bench(_))) {
        "warn"
    } else {
        "info,sqlx=warn"
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .init();
    match cli.command {
        None => serve(ServeArgs::default()).await,
        Some(Command::Serve(args)) => serve(args).await,
        Some(Command::Inspect(args)) => inspect(&args).await,
        Some(Command::Purge(args)) => purge(&args).await,
        Some(Command::Prune(args)) => prune(&args).await,
        Some(Command::Upgrade(args)) => upgrade(&args).await,
        Some(Command::Bench(args)) => {
            if let (Some(url), Some(store), Some(bus)) =
                (args.scale_worker, args.scale_store, args.scale_bus)
            {
                let pinned = args.scale_pin;
                return tokio::task::spawn_blocking(move || {
                    bench::scale_worker(&url, &store, &bus, pinned)
                })
                .await?;
            }
            if let Some(kind) = args.memory_probe {
                let pending = args.pending;
                let bytes = tokio::task::spawn_blocking(move || {
                    bench::memory_probe(pending, kind == "typed")
                })
                .await?;
                println!("{bytes}");
                return Ok(());
            }
            let cfg = bench::BenchConfig {
                runs: args.runs,
                python: (!args.no_python).then_some(args.python),
                python_script: args.python_script,
                events: args.events,
                pending: args.pending,
                progress: !args.json,
                only: args.only,
                postgres: args.postgres,
                nats: args.nats,
                nats_key_partitions: args.nats_key_partitions,
                nats_pin_key_partitions: args.nats_pin_key_partitions || !args.nats_one_at_a_time,
            };
            if !args.json {
                eprintln!("measuring; this takes about {:?}", bench::estimate(&cfg));
            }
            // Written into BENCHMARKS.md: no password of a --postgres or --nats URL.
            let command = std::env::args()
                .map(|a| match a.split_once('=') {
                    Some((flag, url)) if flag.starts_with("--") => {
                        format!("{flag}={}", redacted(url))
                    }
                    _ => redacted(&a),
                })
                .collect::<Vec<_>>()
                .join(" ");
            // The bench makes runtimes of its own: run it off this one.
            let report = tokio::task::spawn_blocking(move || bench::run(&cfg, command)).await??;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{}", bench::markdown(&report));
            }
            if let Some(path) = args.write_docs {
                bench::write_docs(&path, &report)?;
                eprintln!("table written to {}", path.display());
            }
            Ok(())
        }
        Some(Command::Users(args)) => users(&args).await,
        Some(c @ (Command::Stats(_) | Command::Tail(_) | Command::DeadLetters(_))) => {
            if let Err(e) = remote_command(c).await {
                eprintln!("error: {e}");
                std::process::exit(e.exit_code());
            }
            Ok(())
        }
        Some(Command::Load(args)) => {
            let report = load::run(load::LoadConfig {
                tokens: args.token,
                url: args.url,
                concurrency: args.concurrency,
                duration: Duration::from_secs(args.seconds),
                warmup: Duration::from_secs(args.warmup),
                rate: args.rate,
            })
            .await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "{} requests ({} errors), {:.0} req/s, latency p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs",
                    report.requests, report.errors, report.throughput, report.p50_us, report.p99_us, report.max_us
                );
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn printed_urls_keep_no_password() {
        assert_eq!(
            redacted("postgres://app:s3cret@db:5432/app?sslmode=require"),
            "postgres://app:***@db:5432/app?sslmode=require"
        );
        assert_eq!(redacted("nats://u:p@h:4222"), "nats://u:***@h:4222");
        assert_eq!(redacted("nats://token@h:4222"), "nats://***@h:4222");
        assert_eq!(redacted("postgres://app@db/app"), "postgres://app@db/app");
        assert_eq!(redacted("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(redacted("not a url"), "not a url");
    }
}
