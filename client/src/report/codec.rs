//! `ReportStream` requests, encoded straight from the report task's batch.
//!
//! The generated client would need a `pb::ReportRequest`, that is one
//! `String` per outcome for its circuit name: an allocation, a copy and a
//! free per outcome, a sixth of a load generator's reporting cost. Here a
//! batch names its circuits by index into a table shared with the report
//! task, and [`ReportCodec`] writes the bytes prost would write for the
//! equivalent `pb::ReportRequest` (fields in number order, proto3 defaults
//! left out), so the wire format is unchanged; a property test decodes
//! random batches with prost to keep the two from drifting apart. Responses
//! are decoded by prost as before.

use std::sync::Arc;

use breakerd_policy::Outcome;
use breakerd_proto::v1 as pb;
use prost::bytes::BufMut as _;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use tonic::client::Grpc;
use tonic::codec::{Codec, EncodeBuf, Encoder, Streaming};
use tonic_prost::ProstDecoder;

use crate::shared::RpcChannel;

/// The RPC this codec is for.
pub(crate) const REPORT_STREAM_PATH: &str = "/breakerd.v1.Breaker/ReportStream";

/// One outcome of a batch: `pb::OutcomeReport` with the circuit by index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Row {
    /// Index into the batch's name table.
    pub(crate) idx: u32,
    pub(crate) generation: u64,
    pub(crate) lease: u64,
    pub(crate) outcome: Outcome,
    pub(crate) latency_us: u64,
    pub(crate) age_us: u64,
}

/// A `ReportRequest` as the report task builds it.
#[derive(Debug, Clone)]
pub(crate) struct Batch {
    pub(crate) node_id: Arc<str>,
    /// Circuit names by registry index; only grows, shared with the task.
    pub(crate) names: Arc<Vec<Arc<str>>>,
    pub(crate) rows: Vec<Row>,
}

fn outcome_number(o: Outcome) -> u64 {
    let n = match o {
        Outcome::Success => pb::Outcome::Success,
        Outcome::Failure => pb::Outcome::Failure,
        Outcome::Ignored => pb::Outcome::Ignored,
    };
    // Enum numbers of OutcomeReport.outcome are all positive.
    u64::from((n as i32).unsigned_abs())
}

/// The scalar fields of `OutcomeReport` (numbers 2 to 6), in order.
fn scalars(r: &Row) -> [(u32, u64); 5] {
    [
        (2, r.generation),
        (3, r.lease),
        (4, outcome_number(r.outcome)),
        (5, r.latency_us),
        (6, r.age_us),
    ]
}

/// Length of a length-delimited field `tag` of `len` bytes; 0 when empty
/// (proto3 leaves empty strings out).
fn delimited_len(tag: u32, len: usize) -> usize {
    if len == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(len as u64) + len
    }
}

fn put_delimited(tag: u32, bytes: &[u8], buf: &mut Vec<u8>) {
    if !bytes.is_empty() {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(bytes.len() as u64, buf);
        buf.extend_from_slice(bytes);
    }
}

/// Append the protobuf encoding of `batch` as a `breakerd.v1.ReportRequest`
/// to `buf`. `None` when a row names a circuit missing from the table (the
/// report task never builds one).
pub(crate) fn encode_batch(batch: &Batch, buf: &mut Vec<u8>) -> Option<()> {
    put_delimited(1, batch.node_id.as_bytes(), buf);
    for r in &batch.rows {
        let name = batch.names.get(r.idx as usize)?;
        let mut len = delimited_len(1, name.len());
        for (tag, v) in scalars(r) {
            if v != 0 {
                len += key_len(tag) + encoded_len_varint(v);
            }
        }
        // A message field is written even when empty.
        encode_key(2, WireType::LengthDelimited, buf);
        encode_varint(len as u64, buf);
        put_delimited(1, name.as_bytes(), buf);
        for (tag, v) in scalars(r) {
            if v != 0 {
                encode_key(tag, WireType::Varint, buf);
                encode_varint(v, buf);
            }
        }
    }
    Some(())
}

/// Codec of the `ReportStream` RPC: [`Batch`] out, `pb::ReportResponse` in.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ReportCodec;

impl Codec for ReportCodec {
    type Encode = Batch;
    type Decode = pb::ReportResponse;
    type Encoder = BatchEncoder;
    type Decoder = ProstDecoder<pb::ReportResponse>;

    fn encoder(&mut self) -> Self::Encoder {
        BatchEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::default()
    }
}

/// Encodes batches through a scratch buffer kept for the stream's life:
/// byte-at-a-time writes to a `Vec` are cheaper than to tonic's buffer.
#[derive(Debug, Default)]
pub(crate) struct BatchEncoder {
    scratch: Vec<u8>,
}

impl Encoder for BatchEncoder {
    type Item = Batch;
    type Error = Status;

    fn encode(&mut self, item: Batch, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        self.scratch.clear();
        encode_batch(&item, &mut self.scratch)
            .ok_or_else(|| Status::internal("report batch names an unknown circuit"))?;
        dst.put_slice(&self.scratch);
        Ok(())
    }
}

/// Open the `ReportStream` RPC as the generated client would (readiness,
/// method extension for interceptors and tracing), sending `batches`.
pub(crate) async fn report_stream(
    grpc: &mut Grpc<RpcChannel>,
    batches: mpsc::Receiver<Batch>,
) -> Result<tonic::Response<Streaming<pb::ReportResponse>>, Status> {
    grpc.ready()
        .await
        .map_err(|e| Status::unknown(format!("Service was not ready: {e}")))?;
    let mut req = tonic::Request::new(ReceiverStream::new(batches));
    req.extensions_mut().insert(tonic::GrpcMethod::new(
        "breakerd.v1.Breaker",
        "ReportStream",
    ));
    let path = http::uri::PathAndQuery::from_static(REPORT_STREAM_PATH);
    grpc.streaming(req, path, ReportCodec).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use prost::Message;

    /// The request the report task used to build: a `String` per outcome.
    fn old_way(b: &Batch) -> pb::ReportRequest {
        pb::ReportRequest {
            node_id: b.node_id.to_string(),
            outcomes: b
                .rows
                .iter()
                .map(|r| pb::OutcomeReport {
                    circuit: b.names[r.idx as usize].to_string(),
                    generation: r.generation,
                    lease_id: r.lease,
                    outcome: outcome_number(r.outcome) as i32,
                    latency_us: r.latency_us,
                    age_us: r.age_us,
                })
                .collect(),
        }
    }

    /// Mostly the values that take special paths: zero (left out), one-byte
    /// and ten-byte varints.
    fn scalar() -> impl Strategy<Value = u64> {
        prop_oneof![
            Just(0u64),
            Just(1u64),
            Just(127u64),
            Just(128u64),
            Just(u64::MAX),
            any::<u64>(),
            0u64..100_000,
        ]
    }

    fn outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![
            Just(Outcome::Success),
            Just(Outcome::Failure),
            Just(Outcome::Ignored)
        ]
    }

    fn batch() -> impl Strategy<Value = Batch> {
        let names = prop::collection::vec("[A-Za-z0-9._:/-]{1,200}", 1..6);
        ("\\PC{0,40}", names).prop_flat_map(|(node_id, names)| {
            let n = names.len() as u32;
            let row = (0..n, scalar(), scalar(), outcome(), scalar(), scalar()).prop_map(
                |(idx, generation, lease, outcome, latency_us, age_us)| Row {
                    idx,
                    generation,
                    lease,
                    outcome,
                    latency_us,
                    age_us,
                },
            );
            let names: Vec<Arc<str>> = names.iter().map(|s| Arc::from(s.as_str())).collect();
            let node_id: Arc<str> = Arc::from(node_id.as_str());
            prop::collection::vec(row, 0..40).prop_map(move |rows| Batch {
                node_id: Arc::clone(&node_id),
                names: Arc::new(names.clone()),
                rows,
            })
        })
    }

    proptest! {
        #[test]
        fn hand_encoding_is_what_prost_writes(b in batch()) {
            let mut buf = Vec::new();
            prop_assert!(encode_batch(&b, &mut buf).is_some());
            let old = old_way(&b);
            let decoded = pb::ReportRequest::decode(buf.as_slice());
            prop_assert_eq!(decoded.as_ref().ok(), Some(&old));
            // Byte for byte, not only equal once decoded.
            prop_assert_eq!(buf, old.encode_to_vec());
        }
    }

    #[test]
    fn defaults_are_left_out_and_an_all_default_outcome_is_kept() {
        let b = Batch {
            node_id: Arc::from(""),
            names: Arc::new(vec![Arc::from("a")]),
            rows: vec![Row {
                idx: 0,
                generation: 0,
                lease: 0,
                outcome: Outcome::Success,
                latency_us: 0,
                age_us: 0,
            }],
        };
        let mut buf = Vec::new();
        assert!(encode_batch(&b, &mut buf).is_some());
        // outcomes { circuit: "a", outcome: SUCCESS }, nothing else.
        assert_eq!(buf, [0x12, 5, 0x0a, 1, b'a', 0x20, 1]);
        assert_eq!(buf, old_way(&b).encode_to_vec());
    }

    #[test]
    fn a_row_without_a_name_is_refused_not_a_panic() {
        let b = Batch {
            node_id: Arc::from("n"),
            names: Arc::new(Vec::new()),
            rows: vec![Row {
                idx: 3,
                generation: 1,
                lease: 0,
                outcome: Outcome::Failure,
                latency_us: 1,
                age_us: 0,
            }],
        };
        assert!(encode_batch(&b, &mut Vec::new()).is_none());
    }
}
