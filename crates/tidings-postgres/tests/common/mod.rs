//! Shared by the PostgreSQL tests: the server's URL, and a guard that
//! deletes a test's bus name when the test ends (passing or failing), so
//! that runs leave nothing behind.

#![allow(dead_code)]

/// `TIDINGS_TEST_POSTGRES_URL`, or `None` (said on stderr: the test is not run).
pub fn url() -> Option<String> {
    let url = std::env::var("TIDINGS_TEST_POSTGRES_URL").ok();
    if url.is_none() {
        eprintln!("TIDINGS_TEST_POSTGRES_URL not set: PostgreSQL test not run");
    }
    url
}

/// A fresh bus name with `prefix`.
pub fn bus_name(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7())
}

/// Purges its bus name when dropped (on a thread of its own, so that it
/// works inside and outside a runtime).
pub struct Purge {
    pub url: String,
    pub bus: String,
}

impl Drop for Purge {
    fn drop(&mut self) {
        let (url, bus) = (self.url.clone(), self.bus.clone());
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(tidings_postgres::PgStore::purge(&url, &bus))
        })
        .join();
        if !matches!(done, Ok(Ok(()))) {
            eprintln!("could not purge bus {}", self.bus);
        }
    }
}
