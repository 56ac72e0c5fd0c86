//! `tracelake demo`'s application and traffic: the reference components
//! put together as an order API ([`app`]) and a client that drives it
//! ([`traffic`]). The binary starts tracelake, then these.

pub mod app;
pub mod traffic;

pub use app::{Export, Stack, StackSettings};
pub use traffic::TrafficStats;
