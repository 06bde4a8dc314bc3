#[tidings::handler]
async fn raw(_e: &tidings::Envelope) {}

fn main() {}
