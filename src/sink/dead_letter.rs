//! The dead-letter topic: the original bytes of a record that could not be read, with the reason
//! and where it came from in headers.

use std::sync::Arc;

use bytes::Bytes;
use rdkafka::message::{Header, OwnedHeaders};

use super::kafka::{produce_until_acked, Outgoing};
use super::producer::Topic;
use super::{AckFuture, Producer};
use crate::kafka::Headers;
use crate::telemetry::{self, SinkLabel};

/// Where a dead-letter record came from.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Source topic.
    pub topic: String,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Why it could not be read.
    pub error: String,
    /// The record's key, if any.
    pub key: Option<Bytes>,
    /// The record's headers, kept ahead of tracesift's own.
    pub headers: Headers,
}

/// Writes the original bytes, key and headers of an unreadable record to the dead-letter topic,
/// adding headers `tracesift.error`, `tracesift.source.topic`, `tracesift.source.partition`,
/// `tracesift.source.offset`. Resolves to the record's offset once acknowledged.
pub fn dead_letter(
    producer: Producer,
    dlq_topic: Arc<str>,
    payload: Bytes,
    from: DeadLetter,
) -> AckFuture {
    Box::pin(async move {
        let mut headers = OwnedHeaders::new_with_capacity(from.headers.len() + 4);
        for (key, value) in &from.headers {
            headers = headers.insert(Header {
                key: key.as_str(),
                value: value.as_deref(),
            });
        }
        let headers = headers
            .insert(Header {
                key: "tracesift.error",
                value: Some(from.error.as_bytes()),
            })
            .insert(Header {
                key: "tracesift.source.topic",
                value: Some(from.topic.as_bytes()),
            })
            .insert(Header {
                key: "tracesift.source.partition",
                value: Some(from.partition.to_string().as_bytes()),
            })
            .insert(Header {
                key: "tracesift.source.offset",
                value: Some(from.offset.to_string().as_bytes()),
            });
        let key = from.key.clone().unwrap_or_default();
        write(&producer, &dlq_topic, &key, &payload, headers).await;
        telemetry::dead_letter();
        vec![from.offset]
    })
}

/// Writes kept spans a sink refused for good (`payload`, an `ExportTraceServiceRequest` of one
/// trace's spans) to the dead-letter topic, keyed by the trace id (hex), with headers
/// `tracesift.error` (`reason`), `tracesift.sink` and `tracesift.trace_id`.
pub async fn refused_kept(
    producer: &Producer,
    dlq_topic: &str,
    trace_hex: &str,
    payload: &[u8],
    reason: &str,
    sink: SinkLabel,
) {
    let headers = OwnedHeaders::new_with_capacity(3)
        .insert(Header {
            key: "tracesift.error",
            value: Some(reason.as_bytes()),
        })
        .insert(Header {
            key: "tracesift.sink",
            value: Some(sink.as_str().as_bytes()),
        })
        .insert(Header {
            key: "tracesift.trace_id",
            value: Some(trace_hex.as_bytes()),
        });
    write(producer, dlq_topic, trace_hex.as_bytes(), payload, headers).await;
}

/// Writes one dead letter until acknowledged. One too large for the dead-letter topic goes
/// without its payload, with `tracesift.payload_omitted` saying why (the reason and the
/// coordinates still arrive; the original stays addressable where it came from).
pub async fn write(
    producer: &Producer,
    dlq_topic: &str,
    key: &[u8],
    payload: &[u8],
    headers: OwnedHeaders,
) {
    let out = Outgoing {
        headers: Some(&headers),
        ..Outgoing::new(dlq_topic, key, payload)
    };
    if let Err(e) = produce_until_acked(producer, out, Topic::DeadLetter).await {
        let headers = headers.insert(Header {
            key: "tracesift.payload_omitted",
            value: Some(e.to_string().as_bytes()),
        });
        let out = Outgoing {
            headers: Some(&headers),
            ..Outgoing::new(dlq_topic, key, &[])
        };
        if let Err(e) = produce_until_acked(producer, out, Topic::DeadLetter).await {
            tracing::error!(error = %e, "dead letter refused even without its payload");
        }
    }
}
