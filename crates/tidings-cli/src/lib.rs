//! The `tidings` binary's library: the demo service and the load generator,
//! in a library so that integration tests can start the service on a free port.

pub mod backends;
pub mod bench;
pub mod demo;
pub mod load;
pub mod remote;
