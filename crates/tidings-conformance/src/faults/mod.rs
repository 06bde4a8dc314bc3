//! Servers a test may stop, restart, freeze and cut, without touching the
//! machine's shared services: a private PostgreSQL cluster
//! ([`PrivatePostgres`]: `initdb` into a temporary directory, `pg_ctl` on a
//! port of its own), a private NATS server with JetStream
//! ([`PrivateNats`]: `nats-server -p PORT -js -sd DIR`), and a TCP
//! [`Proxy`] to put between a bus and either, which can hold every byte
//! (a network stall, a paused peer) or close every connection (a partition
//! that resets).
//!
//! Each is gone when dropped: the server stopped, its directory removed.
//!
//! ```no_run
//! use tidings_conformance::faults::{PrivatePostgres, Stop};
//! let pg = PrivatePostgres::start().expect("initdb and pg_ctl are installed");
//! let url = pg.url(); // postgres://postgres@127.0.0.1:<port>/postgres
//! pg.stop(Stop::Immediate).unwrap();
//! pg.restart().unwrap();
//! ```

mod holder;
mod nats;
mod postgres;
mod proxy;
mod storm;

pub use holder::{Holder, Journal, Step};
pub use nats::{PrivateNats, SERVER_VAR};
pub use postgres::{PrivatePostgres, Stop};
pub use proxy::Proxy;
pub use storm::{storm, Fault, Record, Report, Sink, STORM_EVENT};

use std::path::PathBuf;

/// A free TCP port on 127.0.0.1 (bound, then let go: another process could
/// take it in between, which a test then reports as a failure to start).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// A fresh directory under the system's temporary directory.
fn scratch_dir(prefix: &str) -> std::io::Result<PathBuf> {
    let mut tail = [0u8; 8];
    rand::Rng::fill(&mut rand::rng(), &mut tail);
    let hex: String = tail.iter().map(|b| format!("{b:02x}")).collect();
    let dir = std::env::temp_dir().join(format!("tidings-{prefix}-{hex}"));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Waits up to `limit` for `ready`, polling every 50 ms.
fn wait_for(limit: std::time::Duration, mut ready: impl FnMut() -> bool) -> bool {
    let until = std::time::Instant::now() + limit;
    while std::time::Instant::now() < until {
        if ready() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    ready()
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
fn accepts(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}
