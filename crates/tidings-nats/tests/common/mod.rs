//! Shared by the NATS tests: the server's URL, and a bus name per test that
//! is purged from the server when the test ends.

/// `TIDINGS_TEST_NATS_URL`, or `None` (said on stderr: the test is not run).
pub fn url() -> Option<String> {
    let url = std::env::var("TIDINGS_TEST_NATS_URL").ok();
    if url.is_none() {
        eprintln!("TIDINGS_TEST_NATS_URL not set: NATS test not run");
    }
    url
}

/// A fresh bus name on the test server, purged when dropped (the test
/// ended, passing or failing), so that runs leave nothing behind. `None`
/// when the URL is not set.
pub struct TestBus {
    pub url: String,
    pub name: String,
}

impl TestBus {
    pub fn new(prefix: &str) -> Option<Self> {
        Some(Self {
            url: url()?,
            name: format!("{prefix}-{}", uuid::Uuid::now_v7().simple()),
        })
    }

    /// A store over this bus, with a short `ack_wait` so that tests of
    /// takeover finish quickly.
    #[allow(dead_code)]
    pub async fn store(&self) -> tidings_nats::JetStreamStore {
        let options = tidings_nats::Options::default().ack_wait(std::time::Duration::from_secs(2));
        tidings_nats::JetStreamStore::connect_with(&self.url, &self.name, options)
            .await
            .expect("TIDINGS_TEST_NATS_URL is set but the store does not connect")
    }
}

impl Drop for TestBus {
    fn drop(&mut self) {
        // On a thread of its own, so that it works inside and outside a runtime.
        let (url, bus) = (self.url.clone(), self.name.clone());
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(tidings_nats::JetStreamStore::purge(&url, &bus))
        })
        .join();
        if !matches!(done, Ok(Ok(()))) {
            eprintln!("could not purge bus {}", self.name);
        }
    }
}
