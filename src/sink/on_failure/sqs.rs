//! The SQS failure destination: one message per document (IAM: `sqs:SendMessage`).

use super::aws_error;
use crate::aws::classify;
use crate::sink::SinkError;

pub(super) async fn send(
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
    document: String,
) -> Result<(), SinkError> {
    client
        .send_message()
        .queue_url(queue_url)
        .message_body(document)
        .send()
        .await
        .map_err(|e| aws_error(classify("SendMessage", &e)))?;
    Ok(())
}
