//! [`ScratchBus`]: a bus name of its own on a test server, for a backend's
//! tests that talk to a real server (PostgreSQL, NATS): runs side by side and
//! after each other never meet, and each leaves nothing behind.
//!
//! ```
//! use tidings_conformance::scratch::{Purging, ScratchBus, Server};
//!
//! struct Local;
//! impl Server for Local {
//!     const URL_VAR: &'static str = "TIDINGS_DOC_EXAMPLE_URL";
//!     fn purge(_url: String, _bus: String) -> Purging {
//!         Box::pin(async { Ok(()) }) // a real server deletes the bus here
//!     }
//! }
//!
//! // The variable is unset: the test that asked is not run.
//! assert!(ScratchBus::<Local>::new("outbox").is_none());
//! std::env::set_var("TIDINGS_DOC_EXAMPLE_URL", "local://");
//! let bus = ScratchBus::<Local>::new("outbox").unwrap();
//! assert!(bus.name.starts_with("outbox-") && bus.name.len() == 7 + 32);
//! // Dropped: purged.
//! ```

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use tidings::StoreError;

/// What a [`Server::purge`] returns.
pub type Purging = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>>;

/// A kind of test server: where its URL comes from, and how a bus name is
/// deleted from it.
pub trait Server {
    /// The environment variable that holds the server's URL. Unset: the
    /// tests that need it are not run (and say so); set and unreachable:
    /// they fail.
    const URL_VAR: &'static str;
    /// Deletes everything the bus `bus` holds on the server at `url`.
    fn purge(url: String, bus: String) -> Purging;
}

/// A fresh bus name (`<prefix>-<32 hex digits>`) on the server of `S`,
/// purged when dropped: the test ended, passing or failing.
pub struct ScratchBus<S: Server> {
    /// The server's URL.
    pub url: String,
    /// The bus name.
    pub name: String,
    server: PhantomData<S>,
}

impl<S: Server> ScratchBus<S> {
    /// The server's URL, or `None` (said on stderr) when its variable is unset.
    pub fn url() -> Option<String> {
        let url = std::env::var(S::URL_VAR).ok();
        if url.is_none() {
            eprintln!("{} not set: test not run", S::URL_VAR);
        }
        url
    }

    /// A fresh name on the server; `None` when its variable is unset.
    pub fn new(prefix: &str) -> Option<Self> {
        let mut tail = [0u8; 16];
        rand::Rng::fill(&mut rand::rng(), &mut tail);
        let hex: String = tail.iter().map(|b| format!("{b:02x}")).collect();
        Some(Self {
            url: Self::url()?,
            name: format!("{prefix}-{hex}"),
            server: PhantomData,
        })
    }
}

impl<S: Server> Drop for ScratchBus<S> {
    fn drop(&mut self) {
        // On a thread of its own, so that it works inside and outside a runtime.
        let purging = S::purge(self.url.clone(), self.name.clone());
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(purging)
        })
        .join();
        if !matches!(done, Ok(Ok(()))) {
            eprintln!("could not purge bus {}", self.name);
        }
    }
}
