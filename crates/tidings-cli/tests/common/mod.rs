//! What the demo's tests share: a handler that makes dead letters, and a
//! demo served on a free port over a fresh database.

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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(demo::serve(
            listener,
            state,
            Duration::from_secs(5),
            async move {
                let _ = stopped.await;
            },
        ));
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
