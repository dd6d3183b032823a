//! Test-only servers shared by kinesync's crates: local servers (kinesalite, moto, a
//! fault-injecting Kinesis endpoint), a probe that reads streams back, a reader of
//! aggregated records written from the format's description, and AWS's own deaggregation
//! library (Python, installed on first use). Pure fixtures (the
//! fixtures directory, the reference benchmark rows) are in `kinesync-fixtures`, which needs
//! no AWS SDK. Never a dependency of a shipped crate.

pub mod counting;
pub mod deaggregate;
pub mod fake_kinesis;
pub mod kpl;
pub mod postgres;
pub mod probe;
pub mod servers;
