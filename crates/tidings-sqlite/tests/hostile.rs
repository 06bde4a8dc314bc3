//! Hostile work on the SQLite bus: a poison event among 100 000, and
//! handlers that never return (`tidings_conformance::hostile`).

fn builder(dir: &tempfile::TempDir) -> tidings::EventBusBuilder {
    let store =
        tidings_sqlite::SqliteStore::open(dir.path().join("bus.db")).expect("the store opens");
    tidings::EventBus::builder().discover(false).store(store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_among_100_000_is_dead_lettered_and_the_rest_handled() {
    let dir = tempfile::tempdir().unwrap();
    let f = tidings_conformance::hostile::poison(builder(&dir), 100_000).await;
    eprintln!("poison, sqlite: {f:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_that_never_return_time_out_and_the_rest_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let f = tidings_conformance::hostile::stuck(builder(&dir), 2_000).await;
    eprintln!("stuck, sqlite: {f:?}");
}
