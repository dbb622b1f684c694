//! The Kinesis failure destination: one record per document, keyed by the source shard
//! (IAM: `kinesis:PutRecord`).

use super::aws_error;
use crate::aws::classify;
use crate::sink::SinkError;
use crate::source::kinesis::KinesisStreamRef;

pub(super) async fn put(
    client: &aws_sdk_kinesis::Client,
    stream: &KinesisStreamRef,
    shard_id: &str,
    document: Vec<u8>,
) -> Result<(), SinkError> {
    let (name, arn) = match stream {
        KinesisStreamRef::Name(n) => (Some(n.clone()), None),
        KinesisStreamRef::Arn(a) => (None, Some(a.clone())),
    };
    client
        .put_record()
        .set_stream_name(name)
        .set_stream_arn(arn)
        .partition_key(shard_id)
        .data(aws_sdk_kinesis::primitives::Blob::new(document))
        .send()
        .await
        .map_err(|e| aws_error(classify("PutRecord", &e)))?;
    Ok(())
}
