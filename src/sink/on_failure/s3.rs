//! The S3 failure destination: one object per document (IAM: `s3:PutObject`).

use super::aws_error;
use crate::aws::classify;
use crate::sink::SinkError;

pub(super) async fn put(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: String,
    document: Vec<u8>,
) -> Result<(), SinkError> {
    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .content_type("application/json")
        .body(document.into())
        .send()
        .await
        .map_err(|e| aws_error(classify("PutObject", &e)))?;
    Ok(())
}
