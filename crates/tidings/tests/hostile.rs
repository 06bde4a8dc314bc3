//! Hostile work on the in-memory bus: a poison event among 100 000, and
//! handlers that never return (`tidings_conformance::hostile`).

fn builder() -> tidings::EventBusBuilder {
    tidings::EventBus::builder().discover(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_among_100_000_is_dead_lettered_and_the_rest_handled() {
    let f = tidings_conformance::hostile::poison(builder(), 100_000).await;
    eprintln!("poison, memory: {f:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_that_never_return_time_out_and_the_rest_go_on() {
    let f = tidings_conformance::hostile::stuck(builder(), 2_000).await;
    eprintln!("stuck, memory: {f:?}");
}
