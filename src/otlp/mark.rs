//! OTEP 235 sampling marks: the `ot` entry of a W3C tracestate, and the rewrite of a kept span's
//! body with its raised threshold, deciding policy and adjusted count.

use super::threshold::Threshold;
#[allow(unused_imports)]
use super::*;

/// Parses the OTEP 235 `ot` entry of a W3C tracestate: `(rv, th)`.
pub fn parse_ot_tracestate(ts: &str) -> (Option<u64>, Option<Threshold>) {
    let mut rv = None;
    let mut th = None;
    for member in ts.split(',') {
        let member = member.trim();
        let Some(ot) = member.strip_prefix("ot=") else {
            continue;
        };
        for kv in ot.split(';') {
            if let Some(v) = kv.strip_prefix("rv:") {
                if v.len() == 14 {
                    rv = u64::from_str_radix(v, 16).ok();
                }
            } else if let Some(v) = kv.strip_prefix("th:") {
                if !v.is_empty() && v.len() <= 14 {
                    // Trailing zeros are elided: pad to 14 hex digits (56 bits).
                    th = u64::from_str_radix(v, 16)
                        .ok()
                        .map(|x| Threshold::from_raw(x << (4 * (14 - v.len()))));
                }
            }
        }
    }
    (rv, th)
}

/// Sets (or, with `None`, removes) the `th` of the OTEP 235 `ot` entry of a W3C tracestate,
/// keeping the entry's other fields (`rv`, vendor sub-keys) and every other list member. The
/// modified `ot` entry moves to the front, as W3C requires of a modified member; an `ot` entry
/// left empty is removed.
pub fn set_ot_threshold(ts: &str, th: Option<Threshold>) -> String {
    let mut ot_fields: Vec<&str> = Vec::new();
    let mut others: Vec<&str> = Vec::new();
    for member in ts.split(',') {
        let member = member.trim();
        if member.is_empty() {
            continue;
        }
        match member.strip_prefix("ot=") {
            Some(ot) => ot_fields.extend(
                ot.split(';')
                    .filter(|f| !f.is_empty() && !f.starts_with("th:")),
            ),
            None => others.push(member),
        }
    }
    let th_field = th.map(|t| format!("th:{}", t.hex()));
    let mut fields: Vec<&str> = Vec::with_capacity(ot_fields.len() + 1);
    if let Some(f) = &th_field {
        fields.push(f);
    }
    fields.extend(ot_fields);
    let mut out = String::with_capacity(ts.len() + 24);
    if !fields.is_empty() {
        out.push_str("ot=");
        out.push_str(&fields.join(";"));
    }
    for m in others {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(m);
    }
    out
}

/// What a kept span carries out of this stage (built once per kept trace).
#[derive(Debug, Clone)]
pub struct SamplingMark<'a> {
    /// This stage's rejection threshold (`sample::Threshold::UNKNOWN` erases `th`).
    pub threshold: Threshold,
    /// Name of the deciding policy.
    pub policy: &'a str,
    /// The tracestate of a span that arrived without one, rendered once per trace.
    pub(super) plain_trace_state: String,
}

impl<'a> SamplingMark<'a> {
    /// The mark of a trace kept at `threshold` by `policy`.
    pub fn new(threshold: Threshold, policy: &'a str) -> Self {
        let th = (threshold != Threshold::UNKNOWN).then_some(threshold);
        SamplingMark {
            threshold,
            policy,
            plain_trace_state: set_ot_threshold("", th),
        }
    }
}

/// Span attribute naming the policy that kept the trace (the Collector's name for it).
pub const ATTR_POLICY: &str = "tailsampling.policy";
/// Span attribute with the adjusted count (1/p) of the span's effective sampling probability.
pub const ATTR_ADJUSTED_COUNT: &str = "sampling.adjusted_count";

/// Rewrites one `Span` body for emission: the tracestate's `th` raised to the stage's threshold
/// (never lowered; erased when the stage's probability is unknown), and the policy name and
/// adjusted count attributes set (replacing any earlier ones of the same keys). Every other
/// field is copied byte for byte.
pub fn mark_span(span: &[u8], mark: &SamplingMark<'_>) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::with_capacity(span.len() + 96);
    let mut rd = Reader::new(span, 0..span.len());
    let mut trace_state = "";
    while let Some((n, tag_start, w)) = rd.field()? {
        match (n, &w) {
            (3, Wire::Len(r)) => {
                trace_state = utf8(span, r.clone(), "Span.trace_state")?;
                continue;
            }
            (9, Wire::Len(r)) => {
                let (k, _) = strict::key_value(span, r.clone(), SPAN_DEPTH + 1)?;
                let k = &span[k];
                if k == ATTR_POLICY.as_bytes() || k == ATTR_ADJUSTED_COUNT.as_bytes() {
                    continue;
                }
            }
            _ => {}
        }
        out.extend_from_slice(&span[tag_start..rd.pos]);
    }
    let (_, th_in) = parse_ot_tracestate(trace_state);
    let th = (mark.threshold != Threshold::UNKNOWN)
        .then(|| mark.threshold.max(th_in.unwrap_or(Threshold::ALWAYS)));
    let ts: std::borrow::Cow<'_, str> = if trace_state.is_empty() {
        std::borrow::Cow::Borrowed(&mark.plain_trace_state)
    } else {
        std::borrow::Cow::Owned(set_ot_threshold(trace_state, th))
    };
    if !ts.is_empty() {
        put_len_header(&mut out, 3, ts.len());
        out.extend_from_slice(ts.as_bytes());
    }
    put_string_attribute(&mut out, ATTR_POLICY, mark.policy);
    if let Some(t) = th {
        put_double_attribute(&mut out, ATTR_ADJUSTED_COUNT, t.adjusted_count());
    }
    Ok(out)
}

pub(super) fn put_string_attribute(out: &mut Vec<u8>, key: &str, value: &str) {
    let any = len_field_size(value.len());
    let kv = len_field_size(key.len()) + len_field_size(any);
    put_len_header(out, 9, kv);
    put_len_header(out, 1, key.len());
    out.extend_from_slice(key.as_bytes());
    put_len_header(out, 2, any);
    put_len_header(out, 1, value.len());
    out.extend_from_slice(value.as_bytes());
}

pub(super) fn put_double_attribute(out: &mut Vec<u8>, key: &str, value: f64) {
    let any = 1 + 8;
    let kv = len_field_size(key.len()) + len_field_size(any);
    put_len_header(out, 9, kv);
    put_len_header(out, 1, key.len());
    out.extend_from_slice(key.as_bytes());
    put_len_header(out, 2, any);
    put_varint(out, (4 << 3) | u64::from(WT_I64));
    out.extend_from_slice(&value.to_le_bytes());
}
