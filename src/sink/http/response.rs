//! What a handler's 2xx answer says of a batch, by Lambda's rules for partial batch responses
//! of stream sources (`{"batchItemFailures": [{"itemIdentifier": "<sequence number>"}]}`).
//! Pure.
//!
//! Complete success: no body, a body that is not a JSON object (Lambda takes a function's
//! return value as-is), no `batchItemFailures`, `null`, or an empty list. Complete failure
//! (the batch is retried, or bisected): `batchItemFailures` that is not a list, an entry
//! without a non-empty string `itemIdentifier`, or one that names no record of the batch.
//! Otherwise the records before the lowest failed one are done.

use serde_json::Value;

#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    Success,
    /// The first `handled` records are done; `failed` records were named.
    Partial {
        handled: usize,
        failed: usize,
    },
    /// The answer counts as a failure of the whole batch, for this reason.
    Failure(String),
}

/// Reads a 2xx body for a batch whose records have these sequence numbers, in order.
pub fn read_answer(body: &[u8], sequence_numbers: &[&str]) -> Answer {
    let Ok(Value::Object(answer)) = serde_json::from_slice::<Value>(body) else {
        return Answer::Success;
    };
    let failures = match answer.get("batchItemFailures") {
        None | Some(Value::Null) => return Answer::Success,
        Some(Value::Array(items)) if items.is_empty() => return Answer::Success,
        Some(Value::Array(items)) => items,
        Some(_) => return Answer::Failure("batchItemFailures is not a list".into()),
    };
    let mut lowest = usize::MAX;
    for item in failures {
        let id = match item.get("itemIdentifier") {
            Some(Value::String(s)) if !s.is_empty() => s,
            _ => {
                return Answer::Failure(
                    "a batchItemFailures entry has no itemIdentifier (a sequence number)".into(),
                )
            }
        };
        match sequence_numbers.iter().position(|s| s == id) {
            Some(i) => lowest = lowest.min(i),
            None => {
                return Answer::Failure(format!(
                    "batchItemFailures names {}, which is not a sequence number of the batch",
                    shorten(id)
                ))
            }
        }
    }
    Answer::Partial {
        handled: lowest,
        failed: failures.len(),
    }
}

fn shorten(s: &str) -> String {
    match s.char_indices().nth(60) {
        Some((at, _)) => format!("{:?}…", &s[..at]),
        None => format!("{s:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEQS: [&str; 4] = ["100", "200", "300", "400"];

    fn answer(body: &str) -> Answer {
        read_answer(body.as_bytes(), &SEQS)
    }

    #[test]
    fn lambdas_success_conditions() {
        for body in [
            "",
            "null",
            "{}",
            r#"{"batchItemFailures": null}"#,
            r#"{"batchItemFailures": []}"#,
            "\"done\"",
            "not json at all",
            r#"{"other": 1}"#,
        ] {
            assert_eq!(answer(body), Answer::Success, "{body}");
        }
    }

    #[test]
    fn the_lowest_failed_record_decides() {
        assert_eq!(
            answer(
                r#"{"batchItemFailures": [{"itemIdentifier": "300"}, {"itemIdentifier": "200"}]}"#
            ),
            Answer::Partial {
                handled: 1,
                failed: 2
            }
        );
        assert_eq!(
            answer(r#"{"batchItemFailures": [{"itemIdentifier": "100"}]}"#),
            Answer::Partial {
                handled: 0,
                failed: 1
            }
        );
    }

    #[test]
    fn lambdas_failure_conditions() {
        for body in [
            r#"{"batchItemFailures": [{"itemIdentifier": ""}]}"#,
            r#"{"batchItemFailures": [{"itemIdentifier": null}]}"#,
            r#"{"batchItemFailures": [{"ItemIdentifier": "200"}]}"#,
            r#"{"batchItemFailures": [{"itemIdentifier": "999"}]}"#,
            r#"{"batchItemFailures": [{"itemIdentifier": 200}]}"#,
            r#"{"batchItemFailures": "200"}"#,
        ] {
            assert!(matches!(answer(body), Answer::Failure(_)), "{body}");
        }
    }
}
