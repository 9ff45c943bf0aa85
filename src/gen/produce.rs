//! Writing planned records to a topic, paced, with the delivery reports counted.

#[allow(unused_imports)]
use super::*;

/// What [`produce`] wrote.
#[derive(Debug, Clone, Default)]
pub struct Produced {
    /// Records acknowledged.
    pub records: usize,
    /// Value bytes acknowledged.
    pub bytes: usize,
    /// Per partition, one past the highest acknowledged offset (from delivery reports, which
    /// every broker gets right).
    pub ends: std::collections::BTreeMap<i32, i64>,
}

impl Produced {
    pub(super) fn note(&mut self, partition: i32, offset: i64) {
        let e = self.ends.entry(partition).or_insert(0);
        *e = (*e).max(offset + 1);
    }
}

pub(super) type DeliveryOutcome = Result<
    rdkafka::producer::future_producer::OwnedDeliveryResult,
    futures::channel::oneshot::Canceled,
>;

pub(super) async fn tracked(
    f: rdkafka::producer::DeliveryFuture,
    len: usize,
) -> (DeliveryOutcome, usize) {
    (f.await, len)
}

/// Produces planned records to `topic` (held-back records after their delay), paced to at most
/// `rate` records per second when given.
pub async fn produce(
    producer: &rdkafka::producer::FutureProducer,
    topic: &str,
    records: &[PlannedRecord],
    rate: Option<f64>,
) -> Result<Produced, rdkafka::error::KafkaError> {
    use futures::StreamExt;
    use rdkafka::producer::FutureRecord;
    let clock = crate::clock::tokio_clock::TokioClock::new();
    let mut pending = futures::stream::FuturesUnordered::new();
    let mut out = Produced::default();
    let mut late: Vec<(MonoTime, &PlannedRecord)> = Vec::new();
    let send = |r: &PlannedRecord| -> Result<rdkafka::producer::DeliveryFuture, rdkafka::error::KafkaError> {
        loop {
            match producer.send_result(FutureRecord::to(topic).key(&r.key).payload(&r.value)) {
                Ok(f) => return Ok(f),
                Err((rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), _)) => {
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(e),
            }
        }
    };
    let settle = |res: Option<DeliveryOutcome>, out: &mut Produced, len: usize| match res {
        Some(Ok(Ok(d))) => {
            out.note(d.partition, d.offset);
            out.records += 1;
            out.bytes += len;
            Ok(())
        }
        Some(Ok(Err((e, _)))) => Err(e),
        Some(Err(_)) => Err(rdkafka::error::KafkaError::Canceled),
        None => Ok(()),
    };
    let mut pushed = 0usize;
    for (i, r) in records.iter().enumerate() {
        if let Some(rate) = rate {
            let due = MonoTime::from_duration(Duration::from_secs_f64(i as f64 / rate));
            tokio::time::sleep(due - clock.now()).await;
        }
        if r.delay > Duration::ZERO {
            late.push((clock.now() + r.delay, r));
        } else {
            let len = r.value.len();
            let f = send(r)?;
            pending.push(tracked(f, len));
            pushed += 1;
        }
        let now = clock.now();
        while let Some(pos) = late.iter().position(|(t, _)| *t <= now) {
            let (_, r) = late.swap_remove(pos);
            let len = r.value.len();
            let f = send(r)?;
            pending.push(tracked(f, len));
            pushed += 1;
        }
        while pending.len() > 10_000 {
            if let Some((res, len)) = pending.next().await {
                settle(Some(res), &mut out, len)?;
            }
        }
    }
    late.sort_by_key(|(t, _)| *t);
    for (t, r) in late {
        tokio::time::sleep(t - clock.now()).await;
        let len = r.value.len();
        let f = send(r)?;
        pending.push(tracked(f, len));
        pushed += 1;
    }
    while let Some((res, len)) = pending.next().await {
        settle(Some(res), &mut out, len)?;
    }
    debug_assert_eq!(out.records, pushed);
    Ok(out)
}
