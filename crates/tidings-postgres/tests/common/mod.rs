//! Shared by the PostgreSQL tests: the server's URL
//! (`TIDINGS_TEST_POSTGRES_URL`), and a bus name per test that is deleted
//! when the test ends.

/// The test server.
pub struct Pg;

impl tidings_conformance::scratch::Server for Pg {
    const URL_VAR: &'static str = "TIDINGS_TEST_POSTGRES_URL";
    fn purge(url: String, bus: String) -> tidings_conformance::scratch::Purging {
        Box::pin(async move { tidings_postgres::PgStore::purge(&url, &bus).await })
    }
}

/// A fresh bus name on the test server, purged when dropped.
pub type TestBus = tidings_conformance::scratch::ScratchBus<Pg>;

/// The server's URL, or `None` (said on stderr: the test is not run).
#[allow(dead_code)]
pub fn url() -> Option<String> {
    TestBus::url()
}
