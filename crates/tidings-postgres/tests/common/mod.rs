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

/// The outbox of the last store a conformance backend built, and how the
/// suite's relay case writes with it: one event in a transaction of its own.
#[derive(Default)]
#[allow(dead_code)]
pub struct Outside(std::sync::Mutex<Option<tidings_postgres::Outbox>>);

#[allow(dead_code)]
impl Outside {
    /// Keeps `store`'s outbox for the next writes.
    pub fn keep(&self, store: &tidings_postgres::PgStore) {
        *self.0.lock().unwrap() = Some(store.outbox());
    }

    /// Writes one event for `bus` in a transaction of its own on `url`.
    pub async fn write(
        &self,
        url: &str,
        bus: &tidings::EventBus,
        event_type: &str,
        data: serde_json::Value,
        key: Option<&str>,
    ) {
        let outbox = self.0.lock().unwrap().clone().expect("a store was built");
        let mut conn: sqlx::PgConnection = sqlx::Connection::connect(url).await.unwrap();
        let mut tx = sqlx::Connection::begin(&mut conn).await.unwrap();
        outbox
            .emit(&mut tx, bus, event_type, data, key)
            .await
            .unwrap()
            .expect("the bus has a handler for the type");
        tx.commit().await.unwrap();
    }
}
