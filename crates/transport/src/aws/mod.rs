//! The real sink: Amazon Kinesis through `aws-sdk-kinesis`.

mod sink;

pub use sink::{
    AssumeRole, AwsKinesisSink, AwsKinesisSinkBuilder, BuildError, Credentials, Secret,
};
