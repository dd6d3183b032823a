//! From `[destination]` to a connected sink, and `kinesync check`.

use std::fmt;
use std::sync::Arc;

use kinesync_transport::{
    CallObserver, CapacityMode, Encryption, InMemorySink, KinesisSink, LimitSink, ObservedSink,
    StreamConfig, StreamDescription, StreamName, StreamStatus, TokioClock,
};

use crate::Error;
use crate::config::{Config, DestinationConfig};

#[cfg(feature = "aws")]
mod aws;

/// A sink and the stream it writes to, with a description of where that is (never secrets).
#[derive(Debug, Clone)]
pub struct Destination {
    /// The sink.
    pub sink: Arc<dyn KinesisSink>,
    /// The stream.
    pub stream: StreamName,
    /// Where the stream is: `region us-east-1`, `endpoint http://...`, `simulated, 4 shards`.
    pub location: String,
    /// Where credentials come from (no secrets).
    pub credentials: String,
    /// The simulated stream, when `[destination]` asks for one (to report its shards).
    pub simulated: Option<Arc<InMemorySink>>,
}

/// Builds the sink `[destination]` describes. Credentials are resolved on the first call.
pub async fn connect(config: &Config) -> Result<Destination, Error> {
    connect_observed(config, None).await
}

/// [`connect`], with every API call the destination makes reported to `observer` (the run's
/// debugger log): the AWS sink reports its own calls, STS's included; a simulated stream is
/// observed from outside.
pub async fn connect_observed(
    config: &Config,
    observer: Option<Arc<dyn CallObserver>>,
) -> Result<Destination, Error> {
    let dest = config.destination()?;
    let stream = StreamName::new(&dest.stream)
        .map_err(|e| config.invalid(format!("[destination] stream: {e}")))?;
    if let Some(simulated) = dest.simulated {
        if dest.region.is_some() || dest.endpoint_url.is_some() {
            return Err(
                config.invalid("[destination] is simulated; region and endpoint_url do not apply")
            );
        }
        let sink = InMemorySink::new();
        if !(1..=kinesync_keys::MAX_EVEN_SHARDS).contains(&simulated.shards) {
            return Err(config.invalid(format!(
                "[destination] simulated = {{ shards = {} }}: a simulated stream has 1 to {} shards",
                simulated.shards,
                kinesync_keys::MAX_EVEN_SHARDS
            )));
        }
        // Only counts are shown for a simulated stream, so its records are not kept: a run of
        // millions of rows costs no memory for them.
        let mut stream_config = StreamConfig::with_shards(simulated.shards);
        stream_config.keep_records = false;
        sink.create_stream(&stream, stream_config);
        let sink = Arc::new(sink);
        // The service's per-shard limits, in real time, unless lifted.
        let limited: Arc<dyn KinesisSink> = if simulated.unlimited {
            sink.clone()
        } else {
            Arc::new(LimitSink::new(
                sink.clone(),
                Arc::new(TokioClock::default()),
            ))
        };
        let observed: Arc<dyn KinesisSink> = match observer {
            Some(observer) => Arc::new(ObservedSink::new(limited, observer)),
            None => limited,
        };
        return Ok(Destination {
            sink: observed,
            stream,
            location: format!(
                "simulated in memory, {} shards{}",
                simulated.shards,
                if simulated.unlimited {
                    ", unlimited"
                } else {
                    " of 1,000 records and 1 MiB per second"
                }
            ),
            credentials: "none needed".into(),
            simulated: Some(sink),
        });
    }
    connect_aws(config, dest, stream, observer).await
}

/// A Kinesis stream through the AWS SDK.
#[cfg(feature = "aws")]
async fn connect_aws(
    config: &Config,
    dest: &DestinationConfig,
    stream: StreamName,
    observer: Option<Arc<dyn CallObserver>>,
) -> Result<Destination, Error> {
    aws::connect(config, dest, stream, observer).await
}

/// Without the `aws` feature only simulated streams can be had.
#[cfg(not(feature = "aws"))]
async fn connect_aws(
    config: &Config,
    _dest: &DestinationConfig,
    _stream: StreamName,
    _observer: Option<Arc<dyn CallObserver>>,
) -> Result<Destination, Error> {
    Err(config.invalid(
        "[destination] names a Kinesis stream, and this kinesync was built without its `aws` feature: only `simulated = { shards = N }` works; build kinesync with its default features",
    ))
}

/// What `kinesync check` found.
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// Where the stream is and how kinesync reaches it.
    pub destination: Destination,
    /// The stream as described.
    pub description: StreamDescription,
}

/// Connects, resolves credentials and describes the stream: the first call a sync would make.
pub async fn check(config: &Config) -> Result<CheckReport, Error> {
    let destination = connect(config).await?;
    let description = destination
        .sink
        .describe_stream(&destination.stream)
        .await?;
    Ok(CheckReport {
        destination,
        description,
    })
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.description;
        let status = match &d.status {
            StreamStatus::Active => "ACTIVE".to_owned(),
            StreamStatus::Creating => "CREATING (not writable yet)".to_owned(),
            StreamStatus::Deleting => "DELETING".to_owned(),
            StreamStatus::Updating => "UPDATING (writable)".to_owned(),
            StreamStatus::Other(s) => s.clone(),
            _ => "unknown".to_owned(),
        };
        writeln!(f, "stream       {}", d.name)?;
        if let Some(arn) = &d.arn {
            writeln!(f, "arn          {arn}")?;
        }
        writeln!(f, "where        {}", self.destination.location)?;
        writeln!(f, "credentials  {}", self.destination.credentials)?;
        writeln!(f, "status       {status}")?;
        writeln!(f, "shards       {} open", d.shards.len())?;
        for shard in d.shards.shards() {
            let share = (shard.end() - shard.start()) as f64 / u128::MAX as f64 * 100.0;
            writeln!(
                f,
                "  {}  {:>39} .. {:<39}  {share:5.1}% of hash keys",
                shard.id(),
                shard.start(),
                shard.end()
            )?;
        }
        writeln!(f, "max record   {} KiB", d.max_record_bytes / 1024)?;
        let encryption = match &d.encryption {
            Encryption::None => "none".to_owned(),
            Encryption::Kms { key_id } => {
                format!("KMS ({})", key_id.as_deref().unwrap_or("key not named"))
            }
            _ => "unknown".to_owned(),
        };
        writeln!(f, "encryption   {encryption}")?;
        let capacity = match &d.capacity_mode {
            CapacityMode::Provisioned => "provisioned".to_owned(),
            CapacityMode::OnDemand => "on-demand".to_owned(),
            CapacityMode::Other(s) => s.clone(),
            _ => "unknown".to_owned(),
        };
        write!(f, "capacity     {capacity}")
    }
}

#[cfg(all(test, not(feature = "aws")))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn without_the_aws_feature_a_kinesis_stream_says_what_to_build() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kinesync.toml");
        std::fs::write(
            &path,
            "[source]\npath = \"m.ndjson\"\nprimary_key = \"id\"\n\n[payload]\nmode = \"row\"\n\n\
             [destination]\nstream = \"orders\"\nregion = \"us-east-1\"\n",
        )
        .unwrap();
        let config = Config::from_file(&path).unwrap();
        let error = connect(&config).await.unwrap_err().to_string();
        assert!(
            error.contains("built without its `aws` feature") && error.contains("simulated"),
            "{error}"
        );
    }
}
