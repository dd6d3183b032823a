//! From `[destination]` to a connected sink, and `kinesync check`.

use std::fmt;
use std::sync::Arc;

use kinesync_transport::{
    AssumeRole, AwsKinesisSink, CallObserver, CapacityMode, Credentials, Encryption, InMemorySink,
    KinesisSink, ObservedSink, Secret, StreamConfig, StreamDescription, StreamName, StreamStatus,
};

use crate::Error;
use crate::config::{AuthKind, Config, DestinationConfig};

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

fn env(config: &Config, setting: &str, name: &Option<String>) -> Result<String, Error> {
    let name = name
        .as_deref()
        .ok_or_else(|| config.invalid(format!("[destination.auth] needs {setting}")))?;
    std::env::var(name).map_err(|_| {
        config.invalid(format!(
            "[destination.auth] {setting} names the environment variable {name}, which is not set"
        ))
    })
}

fn base_credentials(
    config: &Config,
    dest: &DestinationConfig,
) -> Result<(Credentials, String), Error> {
    let auth = &dest.auth;
    let access_key = || -> Result<(Credentials, String), Error> {
        let access_key_id = env(config, "access_key_id_env", &auth.access_key_id_env)?;
        let secret = env(config, "secret_access_key_env", &auth.secret_access_key_env)?;
        let token = match &auth.session_token_env {
            Some(_) => Some(Secret::new(env(
                config,
                "session_token_env",
                &auth.session_token_env,
            )?)),
            None => None,
        };
        let described = format!(
            "access key {access_key_id} from ${}",
            auth.access_key_id_env.as_deref().unwrap_or_default()
        );
        Ok((
            Credentials::AccessKey {
                access_key_id,
                secret_access_key: Secret::new(secret),
                session_token: token,
            },
            described,
        ))
    };
    let profile = |name: &str| {
        (
            Credentials::Profile(name.to_owned()),
            format!("profile {name:?}"),
        )
    };
    match auth.kind {
        AuthKind::Default => Ok((Credentials::DefaultChain, "the default credential chain".into())),
        AuthKind::Profile => {
            let name = auth.profile.as_deref().ok_or_else(|| config.invalid("[destination.auth] kind = \"profile\" needs profile = \"NAME\""))?;
            Ok(profile(name))
        }
        AuthKind::AccessKey => access_key(),
        AuthKind::AssumeRole => match (&auth.profile, auth.access_key_id_env.is_some() || auth.secret_access_key_env.is_some()) {
            (Some(_), true) => Err(config.invalid("[destination.auth] names both a profile and an access key as the base for assume_role; keep one")),
            (Some(name), false) => Ok(profile(name)),
            // Both halves of the key are required: `env` names the one that is missing.
            (None, true) => access_key(),
            (None, false) => Ok((Credentials::DefaultChain, "the default credential chain".into())),
        },
    }
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
        if simulated.shards == 0 {
            return Err(config.invalid("[destination] simulated needs at least 1 shard"));
        }
        // Only counts are shown for a simulated stream, so its records are not kept: a run of
        // millions of rows costs no memory for them.
        let mut stream_config = StreamConfig::with_shards(simulated.shards);
        stream_config.keep_records = false;
        sink.create_stream(&stream, stream_config);
        let sink = Arc::new(sink);
        let observed: Arc<dyn KinesisSink> = match observer {
            Some(observer) => Arc::new(ObservedSink::new(sink.clone(), observer)),
            None => sink.clone(),
        };
        return Ok(Destination {
            sink: observed,
            stream,
            location: format!("simulated in memory, {} shards", simulated.shards),
            credentials: "none needed".into(),
            simulated: Some(sink),
        });
    }
    let (credentials, mut described) = base_credentials(config, dest)?;
    let mut builder = AwsKinesisSink::builder().credentials(credentials);
    if let Some(observer) = observer {
        builder = builder.observer(observer);
    }
    if let Some(region) = &dest.region {
        builder = builder.region(region);
    }
    if let Some(url) = &dest.endpoint_url {
        builder = builder.endpoint_url(url);
    }
    if let Some(url) = &dest.sts_endpoint_url {
        builder = builder.sts_endpoint_url(url);
    }
    if dest.auth.kind == AuthKind::AssumeRole {
        let role_arn = dest.auth.role_arn.clone().ok_or_else(|| {
            config.invalid("[destination.auth] kind = \"assume_role\" needs role_arn")
        })?;
        described = format!("role {role_arn} assumed with {described}");
        builder = builder.assume_role(AssumeRole {
            role_arn,
            external_id: dest.auth.external_id.clone(),
            session_name: dest.auth.session_name.clone(),
        });
    }
    let sink = builder
        .build()
        .await
        .map_err(|e| config.invalid(format!("[destination] {e}")))?;
    let mut location = format!("region {}", sink.region());
    if let Some(url) = &dest.endpoint_url {
        location.push_str(&format!(", endpoint {url}"));
    }
    Ok(Destination {
        sink: Arc::new(sink),
        stream,
        location,
        credentials: described,
        simulated: None,
    })
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
