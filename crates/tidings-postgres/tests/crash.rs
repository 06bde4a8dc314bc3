//! Kill -9 at random: a bus on PostgreSQL loses nothing that `emit`
//! acknowledged (six kills over one bus name; see
//! `tidings_conformance::crash`). Run against `TIDINGS_TEST_POSTGRES_URL`;
//! not run when it is unset.

const BUS: &str = "TIDINGS_CRASH_CHILD_BUS";

fn url() -> Option<String> {
    std::env::var("TIDINGS_TEST_POSTGRES_URL").ok()
}

#[test]
#[ignore = "the child process of killed_at_random_loses_nothing_acknowledged; not a test on its own"]
fn crash_child() {
    let bus = std::env::var(BUS).expect("run by killed_at_random_loses_nothing_acknowledged");
    let url = url().expect("TIDINGS_TEST_POSTGRES_URL");
    tidings_conformance::crash::child(|| async move {
        tidings_postgres::PgStore::connect(&url, &bus)
            .await
            .expect("the store connects")
    });
}

#[test]
fn killed_at_random_loses_nothing_acknowledged() {
    let Some(url) = url() else {
        eprintln!("TIDINGS_TEST_POSTGRES_URL not set: PostgreSQL crash test not run");
        return;
    };
    let bus = format!("crash-{}", uuid::Uuid::now_v7());
    tidings_conformance::crash::parent("crash_child", &[(BUS, bus.as_str())], 6, || async {
        tidings_postgres::PgStore::connect(&url, &bus)
            .await
            .expect("TIDINGS_TEST_POSTGRES_URL is set but the store does not connect")
    });
}
