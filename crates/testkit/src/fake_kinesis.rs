//! A loopback HTTP endpoint that speaks the Kinesis JSON protocol (`PutRecords`,
//! `DescribeStreamSummary`, `ListShards`, `ListStreams`), backed by any [`KinesisSink`]
//! (an `InMemorySink`, with `FaultySink` around it for per-record failures), with faults of
//! its own at the HTTP level: error statuses, slow answers, dropped connections.
//!
//! It lets the real SDK path of `AwsKinesisSink` meet what kinesalite and moto cannot make:
//! per-record `ProvisionedThroughputExceededException` inside an HTTP 200, 400 throttles,
//! 500s, timeouts and resets.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use kinesync_keys::{ExplicitHashKey, PartitionKey};
use kinesync_transport::{
    ErrorKind, KinesisSink, PutRecord, RecordOutcome, StreamName, TransportError,
};
use serde_json::{Value, json};

/// What the endpoint does to one request, before the sink sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum HttpFault {
    /// Answer with this status and error code (`__type`), without calling the sink.
    Status(u16, &'static str),
    /// Close the connection without answering.
    Drop,
    /// Wait this long, then answer normally.
    Delay(Duration),
    /// Call the sink (the records land), then answer HTTP 200 with a body that is not JSON.
    Garble,
    /// Call the sink (the records land), then answer with one result fewer than records.
    ShortAnswer,
    /// Call the sink (the records land), then close the connection without answering: the
    /// answer lost on the way back.
    LandThenDrop,
    /// Call the sink (the records land), then never answer: a process killed meanwhile
    /// (see [`FakeKinesis::held`]) dies with the call's outcome unknown to it.
    LandThenHold,
}

/// What the endpoint saw of one request (never the secret: only the access key id that the
/// SigV4 `Authorization` header names, and whether a session token came along).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    /// The operation (`PutRecords`, ...).
    pub operation: String,
    /// The access key id the request was signed with.
    pub access_key_id: Option<String>,
    /// Whether an `x-amz-security-token` header (temporary credentials) was sent.
    pub session_token: bool,
}

#[derive(Debug)]
struct State {
    sink: Arc<dyn KinesisSink>,
    /// Requests held so far (a channel, so that a test can wait for the next one).
    held: tokio::sync::watch::Sender<usize>,
    faults: Mutex<VecDeque<HttpFault>>,
    /// A fault for every request of one operation that has no queued fault.
    every: Mutex<Option<(String, HttpFault)>>,
    requests: Mutex<Vec<SeenRequest>>,
}

/// The running endpoint; it stops when its tokio runtime does.
#[derive(Debug, Clone)]
pub struct FakeKinesis {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    state: Arc<State>,
}

impl FakeKinesis {
    /// Starts serving `sink` on a free loopback port, on the current tokio runtime.
    pub async fn start(sink: Arc<dyn KinesisSink>) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind a loopback port");
        let endpoint = format!("http://{}", listener.local_addr().expect("a bound address"));
        let state = Arc::new(State {
            sink,
            held: tokio::sync::watch::Sender::new(0),
            faults: Mutex::new(VecDeque::new()),
            every: Mutex::new(None),
            requests: Mutex::new(Vec::new()),
        });
        let serving = state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = serving.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| handle(request, state.clone()));
                    // A dropped connection ends here with an error; that is the point.
                    let _ignored = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { endpoint, state }
    }

    /// Queues a fault for the next request that has none.
    pub fn push_fault(&self, fault: HttpFault) {
        self.state
            .faults
            .lock()
            .expect("fault queue")
            .push_back(fault);
    }

    /// The `X-Amz-Target` operation of every request received, in order.
    pub fn requests(&self) -> Vec<String> {
        self.seen().into_iter().map(|r| r.operation).collect()
    }

    /// Gives every request of `operation` (`PutRecords`, ...) `fault`, until
    /// [`clear_faults`](Self::clear_faults); a fault queued with [`push_fault`](Self::push_fault)
    /// goes first.
    pub fn fault_every(&self, operation: &str, fault: HttpFault) {
        *self.state.every.lock().expect("standing fault") = Some((operation.to_owned(), fault));
    }

    /// Removes every fault, queued or standing.
    pub fn clear_faults(&self) {
        self.state.faults.lock().expect("fault queue").clear();
        *self.state.every.lock().expect("standing fault") = None;
    }

    /// Requests that landed and are held without an answer ([`HttpFault::LandThenHold`]).
    pub fn held(&self) -> usize {
        *self.state.held.borrow()
    }

    /// Waits until a request is held ([`HttpFault::LandThenHold`]).
    pub async fn until_held(&self) {
        let mut held = self.state.held.subscribe();
        // The sender lives as long as the endpoint (it is in `self`), so the wait cannot fail:
        // it ends when a request is held.
        held.wait_for(|held| *held > 0)
            .await
            .map(drop)
            .expect("the endpoint's own sender is alive");
    }

    /// Every request received, in order.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.state.requests.lock().expect("request log").clone()
    }
}

#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped on purpose")
    }
}

impl std::error::Error for Dropped {}

fn answer(status: u16, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amzn-requestid", "fake-request-id")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a valid response")
}

fn error_answer(status: u16, code: &str, message: &str) -> Response<Full<Bytes>> {
    let mut response = answer(status, json!({ "__type": code, "message": message }));
    response
        .headers_mut()
        .insert("x-amzn-errortype", code.parse().expect("a header value"));
    response
}

fn transport_error_answer(e: &TransportError) -> Response<Full<Bytes>> {
    let status = match e.kind() {
        ErrorKind::Transient => 500,
        _ => 400,
    };
    error_answer(status, e.code().unwrap_or("InternalFailure"), e.message())
}

/// One request, answered as the service would. One function on purpose: it reads as the
/// protocol does (target header, body, the operation, the answer), and each operation is a
/// few lines of its match.
async fn handle(
    request: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<Full<Bytes>>, Dropped> {
    let target = request
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Kinesis_20131202."))
        .unwrap_or("")
        .to_owned();
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let access_key_id = header("authorization").and_then(|auth| {
        let (_, rest) = auth.split_once("Credential=")?;
        rest.split('/').next().map(str::to_owned)
    });
    let session_token = header("x-amz-security-token").is_some();
    state
        .requests
        .lock()
        .expect("request log")
        .push(SeenRequest {
            operation: target.clone(),
            access_key_id,
            session_token,
        });
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return Err(Dropped),
    };
    let fault = state
        .faults
        .lock()
        .expect("fault queue")
        .pop_front()
        .or_else(|| {
            let every = state.every.lock().expect("standing fault");
            every
                .as_ref()
                .filter(|(operation, _)| *operation == target)
                .map(|(_, fault)| fault.clone())
        });
    match fault {
        Some(HttpFault::Drop) => return Err(Dropped),
        Some(HttpFault::Status(status, code)) => {
            return Ok(error_answer(status, code, "injected by the fake endpoint"));
        }
        Some(HttpFault::Delay(d)) => tokio::time::sleep(d).await,
        Some(
            HttpFault::Garble
            | HttpFault::ShortAnswer
            | HttpFault::LandThenDrop
            | HttpFault::LandThenHold,
        )
        | None => {}
    }
    let Ok(input) = serde_json::from_slice::<Value>(&body) else {
        return Ok(error_answer(
            400,
            "SerializationException",
            "the body is not JSON",
        ));
    };
    let stream = input["StreamName"]
        .as_str()
        .and_then(|s| StreamName::new(s).ok());
    let answered = match (target.as_str(), stream) {
        ("PutRecords", Some(stream)) => put_records(&state, &stream, &input).await,
        ("DescribeStreamSummary", Some(stream)) => {
            match state.sink.describe_stream(&stream).await {
                Ok(d) => answer(
                    200,
                    json!({ "StreamDescriptionSummary": {
                        "StreamName": d.name, "StreamARN": d.arn, "StreamStatus": "ACTIVE",
                        "StreamModeDetails": { "StreamMode": "PROVISIONED" },
                        "RetentionPeriodHours": 24, "StreamCreationTimestamp": 1_700_000_000.0,
                        "EnhancedMonitoring": [], "EncryptionType": "NONE",
                        "OpenShardCount": d.shards.len(), "ConsumerCount": 0,
                        "MaxRecordSizeInKiB": d.max_record_bytes / 1024,
                    }}),
                ),
                Err(e) => transport_error_answer(&e),
            }
        }
        ("ListShards", Some(stream)) => match state.sink.describe_stream(&stream).await {
            Ok(d) => answer(
                200,
                json!({ "Shards": d.shards.shards().iter().map(|s| json!({
                    "ShardId": s.id(),
                    "HashKeyRange": { "StartingHashKey": s.start().to_string(), "EndingHashKey": s.end().to_string() },
                    "SequenceNumberRange": { "StartingSequenceNumber": "0" },
                })).collect::<Vec<_>>() }),
            ),
            Err(e) => transport_error_answer(&e),
        },
        ("ListStreams", _) => match state.sink.list_streams().await {
            Ok(names) => answer(
                200,
                json!({ "StreamNames": names, "HasMoreStreams": false }),
            ),
            Err(e) => transport_error_answer(&e),
        },
        (_, None) => error_answer(
            400,
            "ValidationException",
            "StreamName is missing or invalid",
        ),
        _ => error_answer(
            400,
            "UnknownOperationException",
            "the fake endpoint does not serve this operation",
        ),
    };
    Ok(match fault {
        Some(HttpFault::LandThenDrop) => return Err(Dropped),
        Some(HttpFault::LandThenHold) => {
            state.held.send_modify(|held| *held += 1);
            std::future::pending().await
        }
        Some(HttpFault::Garble) => {
            mangle(answered, |_| Bytes::from_static(b"{\"Records\": [trunc")).await
        }
        Some(HttpFault::ShortAnswer) => {
            mangle(answered, |body| {
                let mut value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
                if let Some(records) = value["Records"].as_array_mut() {
                    records.pop();
                }
                Bytes::from(value.to_string())
            })
            .await
        }
        _ => answered,
    })
}

/// The same answer with its body rewritten.
async fn mangle(
    answered: Response<Full<Bytes>>,
    rewrite: impl FnOnce(&Bytes) -> Bytes,
) -> Response<Full<Bytes>> {
    let (parts, body) = answered.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    Response::from_parts(parts, Full::new(rewrite(&bytes)))
}

async fn put_records(state: &State, stream: &StreamName, input: &Value) -> Response<Full<Bytes>> {
    let mut records = Vec::new();
    for entry in input["Records"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let data = base64::engine::general_purpose::STANDARD
            .decode(entry["Data"].as_str().unwrap_or_default());
        let key = PartitionKey::new(entry["PartitionKey"].as_str().unwrap_or_default());
        let (Ok(data), Ok(key)) = (data, key) else {
            return error_answer(
                400,
                "ValidationException",
                "a record's Data or PartitionKey is invalid",
            );
        };
        let mut record = PutRecord::new(key, data);
        if let Some(hash) = entry["ExplicitHashKey"].as_str() {
            match hash.parse::<ExplicitHashKey>() {
                Ok(hash) => record = record.with_explicit_hash_key(hash),
                Err(e) => return error_answer(400, "InvalidArgumentException", &e.to_string()),
            }
        }
        records.push(record);
    }
    match state.sink.put_records(stream, &records).await {
        Ok(outcomes) => {
            let failed = outcomes.iter().filter(|o| !o.is_accepted()).count();
            let results: Vec<Value> = outcomes
                .iter()
                .map(|o| match o {
                    RecordOutcome::Accepted {
                        shard_id,
                        sequence_number,
                    } => {
                        json!({ "ShardId": shard_id, "SequenceNumber": sequence_number })
                    }
                    RecordOutcome::Failed { failure, message } => {
                        json!({ "ErrorCode": failure.code(), "ErrorMessage": message })
                    }
                })
                .collect();
            answer(
                200,
                json!({ "FailedRecordCount": failed, "Records": results, "EncryptionType": "NONE" }),
            )
        }
        Err(e) => transport_error_answer(&e),
    }
}
