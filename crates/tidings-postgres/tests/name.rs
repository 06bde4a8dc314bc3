//! One live store per bus name (against `TIDINGS_TEST_POSTGRES_URL`; not run
//! when it is unset).

mod common;

use tidings::StoreError;
use tidings_postgres::PgStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_store_of_a_name_is_refused_until_the_first_is_gone() {
    let Some(url) = common::url() else { return };
    let bus = common::bus_name("lock");
    let first = PgStore::connect(&url, &bus).await.expect("connects");
    let second = PgStore::connect(&url, &bus).await;
    assert!(matches!(second, Err(StoreError::Locked(_))), "{second:?}");
    let other = PgStore::connect(&url, &format!("{bus}-other")).await;
    assert!(other.is_ok(), "another name is free");
    drop(first);
    assert!(
        PgStore::connect(&url, &bus).await.is_ok(),
        "free again once the first is dropped"
    );
}

#[tokio::test]
async fn an_unreachable_server_is_a_backend_error() {
    // Port 1 on loopback: nothing listens there.
    let err = PgStore::connect("postgres://postgres@127.0.0.1:1/test", "t").await;
    assert!(matches!(err, Err(StoreError::Backend(_))), "{err:?}");
}
