//! The one place where a URL chooses a networked backend, for the commands
//! that operate a bus from outside (`inspect`, `purge`, `prune`): a new
//! backend is one arm here.

use tidings::store::Admin;

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
    let scheme = url.split_once("://").map_or("", |(s, _)| s);
    match scheme {
        "postgres" | "postgresql" => {
            Ok(("PostgreSQL", Box::new(tidings_postgres::PgAdmin::new(url))))
        }
        "nats" | "tls" => Ok((
            "NATS JetStream",
            Box::new(tidings_nats::JetStreamAdmin::new(url)),
        )),
        _ => anyhow::bail!(
            "not a bus server URL: expected postgres://, postgresql://, nats:// or tls://"
        ),
    }
}
