//! The one place where a URL chooses a networked backend: for the demo's
//! shared bus (`serve --nats|--postgres`) and for the commands that operate
//! a bus from outside (`inspect`, `purge`, `prune`, `upgrade`). A new backend is an arm
//! in each function here.

use std::time::Duration;
use tidings::store::Admin;
use tidings::EventBusBuilder;

/// The lease of a demo process on a shared PostgreSQL bus: what it claimed
/// goes to the others this long after it dies.
const PG_LEASE: Duration = Duration::from_secs(10);

/// The networked backends, by URL scheme: the one list a new backend joins.
#[derive(Clone, Copy)]
enum Backend {
    Postgres,
    Nats,
}

impl Backend {
    fn of(url: &str) -> anyhow::Result<Self> {
        match url.split_once("://").map_or("", |(s, _)| s) {
            "postgres" | "postgresql" => Ok(Self::Postgres),
            "nats" | "tls" => Ok(Self::Nats),
            _ => anyhow::bail!(
                "not a bus server URL: expected postgres://, postgresql://, nats:// or tls://"
            ),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Postgres => "PostgreSQL",
            Self::Nats => "NATS JetStream",
        }
    }
}

/// `builder` with the shared store (several processes share the
/// deliveries) the URL names on bus name `bus`, and the backend's name.
///
/// # Errors
/// A URL of no known backend, or the store could not connect.
pub async fn shared_bus(
    builder: EventBusBuilder,
    url: &str,
    bus: &str,
) -> anyhow::Result<(EventBusBuilder, &'static str)> {
    let backend = Backend::of(url)?;
    let builder = match backend {
        Backend::Postgres => {
            builder.store(tidings_postgres::PgStore::connect_shared(url, bus, PG_LEASE).await?)
        }
        Backend::Nats => builder.store(tidings_nats::JetStreamStore::connect(url, bus).await?),
    };
    Ok((builder, backend.name()))
}

/// The backend a URL names: its name for people, and its [`Admin`].
///
/// ```
/// let (name, _) = tidings_cli::backends::admin_for("nats://127.0.0.1:4222").unwrap();
/// assert_eq!(name, "NATS JetStream");
/// assert!(tidings_cli::backends::admin_for("mysql://db").is_err());
/// ```
///
/// # Errors
/// A URL of no known backend (the error names the schemes known, not the URL).
pub fn admin_for(url: &str) -> anyhow::Result<(&'static str, Box<dyn Admin>)> {
    let backend = Backend::of(url)?;
    let admin: Box<dyn Admin> = match backend {
        Backend::Postgres => Box::new(tidings_postgres::PgAdmin::new(url)),
        Backend::Nats => Box::new(tidings_nats::JetStreamAdmin::new(url)),
    };
    Ok((backend.name(), admin))
}
