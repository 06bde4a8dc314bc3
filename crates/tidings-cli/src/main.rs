//! `tidings`: the demo service (the default) and its load generator.

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::time::Duration;
use tidings_cli::{demo, load};

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
}

impl Default for ServeArgs {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:8080".parse().expect("valid address"),
            db: "sqlite:tidings-demo.db".into(),
            inline_saves: false,
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

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let store = demo::open_store(&args.db).await?;
    let bus = tidings::init(demo::bus_builder(&store))?;
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    let addr = listener.local_addr()?;
    println!(
        "tidings demo listening on http://{addr} (database: {})",
        args.db.split('?').next().unwrap_or_default()
    );
    println!("event types: {}", bus.event_types().join(", "));
    println!("try:");
    println!(
        "  curl -s http://{addr}/api/chat -H 'content-type: application/json' \
         -d '{{\"user_id\": 1, \"conversation_id\": \"demo-1\", \"message\": \"How do I reset my password?\", \"clearance\": \"PUBLIC\"}}'"
    );
    let state = demo::state(bus, store, args.inline_saves);
    let report = demo::serve(listener, state, Duration::from_secs(10), shutdown_signal()).await?;
    println!(
        "event bus drained: {} deliveries finished, {} abandoned{}",
        report.finished,
        report.abandoned.len(),
        if report.is_clean() {
            ""
        } else {
            " (see the log for their ids)"
        }
    );
    for a in &report.abandoned {
        tracing::warn!(event_id = %a.event_id, handler = %a.handler, "abandoned at shutdown");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .init();
    match Cli::parse().command {
        None => serve(ServeArgs::default()).await,
        Some(Command::Serve(args)) => serve(args).await,
        Some(Command::Load(args)) => {
            let report = load::run(load::LoadConfig {
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
