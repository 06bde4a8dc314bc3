//! What the demo's tests share: a handler that makes dead letters, a demo
//! served on a free port over a fresh database ([`Served`]), and the parts of
//! a durable one for tests that set up their own ([`durable`], [`serve`]).

#![allow(dead_code)] // each test binary uses part of it

use serde_json::json;
use std::time::Duration;
use tidings::EventBus;
use tidings_cli::demo;

/// Refuses every `test_refused` event for good: dead letters on demand.
pub struct Refuses;

impl tidings::EventHandler for Refuses {
    fn event_type(&self) -> &str {
        "test_refused"
    }
    async fn handle(&self, _: &tidings::Envelope) -> Result<(), tidings::HandlerError> {
        Err(tidings::HandlerError::permanent("refused by the test"))
    }
}

/// A demo service on a free port, its bus in memory with [`Refuses`].
pub struct Served {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Its bus.
    pub bus: EventBus,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<anyhow::Result<tidings::ShutdownReport>>,
    _dir: tempfile::TempDir,
}

impl Served {
    /// Serves a fresh demo whose admin token is `admin`, after `refused`
    /// events (with a secret in their data) became dead letters; `metrics`
    /// installs the Prometheus endpoint (once per test binary).
    pub async fn start(admin: &str, refused: usize, metrics: bool) -> Self {
        let handle = metrics.then(|| tidings_admin::prometheus().unwrap());
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("demo.db").display());
        let store = demo::open_store(&url).await.unwrap();
        let bus = demo::bus_builder(&store).handler(Refuses).build().unwrap();
        for n in 0..refused {
            bus.emit("test_refused", json!({"n": n, "secret": "hunter2"}))
                .await
                .unwrap();
        }
        bus.wait_idle().await;
        let admin = tidings_admin::AdminConfig::new(admin).unwrap();
        let mut state = demo::state(bus.clone(), store, false, admin);
        state.metrics = handle;
        let (base, stop, server) = serve(state, Duration::from_secs(5)).await;
        Self {
            base,
            bus,
            stop,
            server,
            _dir: dir,
        }
    }

    /// Stops the service and waits for its drain.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.server.await.unwrap().unwrap();
    }
}

/// A fresh demo database with its users seeded, and a bus builder over a
/// SQLite bus file beside it: what a test of the durable demo starts from.
pub struct Durable {
    /// The directory holding both files (deleted when dropped).
    pub dir: tempfile::TempDir,
    /// The demo's database.
    pub store: tidings_events::Db,
    /// The seeded users' names and tokens, in seeding order.
    pub users: Vec<(String, String)>,
    /// The demo's bus, over the bus file; add handlers, then build.
    pub builder: tidings::EventBusBuilder,
}

/// Opens a [`Durable`] demo in a fresh directory.
pub async fn durable() -> Durable {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("demo.db").display());
    let store = demo::open_store(&url).await.unwrap();
    let tidings_events::Db::Sqlite(db) = &store else {
        unreachable!("a sqlite: URL opens SQLite")
    };
    let users = demo::users::seed(db)
        .await
        .unwrap()
        .into_iter()
        .map(|u| (u.name, u.token))
        .collect();
    let file = tidings_sqlite::SqliteStore::open(dir.path().join("bus.db")).unwrap();
    let builder = demo::bus_builder(&store).store(file);
    Durable {
        dir,
        store,
        users,
        builder,
    }
}

/// A demo being served: its base URL, the sender that stops it, and the
/// server's task (its shutdown report once stopped).
pub type Serving = (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<tidings::ShutdownReport>>,
);

/// Serves `state` on a free port until told to stop, draining for at most `drain`.
pub async fn serve(state: demo::AppState, drain: Duration) -> Serving {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(demo::serve(listener, state, drain, async move {
        let _ = stopped.await;
    }));
    (base, stop, server)
}
