#[tidings::handler(event = "x", retries = 3)]
async fn raw(_e: &tidings::Envelope) {}

fn main() {}
