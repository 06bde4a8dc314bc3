struct Plain;

#[tidings::handler]
async fn on_plain(_p: &Plain) {}

fn main() {}
