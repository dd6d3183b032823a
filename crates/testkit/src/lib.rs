//! Test-only servers shared by kinesync's crates: local servers (kinesalite, moto, a
//! fault-injecting Kinesis endpoint) and a probe that reads streams back. Pure fixtures (the
//! fixtures directory, the reference benchmark rows) are in `kinesync-fixtures`, which needs
//! no AWS SDK. Never a dependency of a shipped crate.

pub mod fake_kinesis;
pub mod probe;
pub mod servers;
