//! The suite's cases, by tier: every backend, durable, shared, relay.

mod durable;
mod every;
mod relay;
mod shared;

pub use durable::*;
pub use every::*;
pub use relay::*;
pub use shared::*;
