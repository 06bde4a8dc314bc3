#[tidings::handler(event = "x")]
async fn raw(_e: &tidings::Envelope) -> u32 {
    1
}

fn main() {}
