//! Listeners: UDP and Unix datagram sockets on blocking threads, TCP streams on tokio. Each
//! receive thread or connection owns a [`Router`] that parses its lines and routes each
//! sample to the shard that owns its series.

pub mod config;
mod router;
pub mod tcp;
pub mod udp;
pub mod unix;

pub use router::Router;
