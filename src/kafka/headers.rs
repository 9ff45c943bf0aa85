//! A Kafka record's headers as the stages carry them (kept apart from the client settings so
//! the pure core can hold them without reaching a Kafka client).

/// A record's headers, in order: name and value (`None` for a null value).
pub type Headers = Vec<(String, Option<bytes::Bytes>)>;
