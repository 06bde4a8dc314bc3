//! The SQLite store passes the whole conformance suite, durable cases included.

use tidings_sqlite::SqliteStore;

struct Sqlite {
    dir: tempfile::TempDir,
}

impl Sqlite {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }
}

impl tidings_conformance::Backend for Sqlite {
    fn features(&self) -> tidings_conformance::Features {
        tidings_conformance::Features {
            durable: true,
            shared: false,
            relay: false,
            spreads_keys: false,
        }
    }
    async fn builder(&self) -> tidings::EventBusBuilder {
        let store = SqliteStore::open(self.dir.path().join("bus.db")).expect("the store opens");
        tidings::EventBus::builder().discover(false).store(store)
    }
}

tidings_conformance::conformance_tests!(durable: Sqlite::new());
