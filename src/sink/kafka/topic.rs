//! The `topic` template: `{table}`, `{stream}` and `{connector}` filled in from the source of
//! each batch. Kafka topic names are 1..=249 characters of `[A-Za-z0-9._-]`; DynamoDB table and
//! Kinesis stream names use the same characters, so a template whose own text is legal renders
//! a legal name unless it grows too long or a connector name brings other characters.

/// Kafka's limit on a topic name.
const MAX_LEN: usize = 249;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicTemplate(String);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part<'a> {
    Text(&'a str),
    Table,
    Stream,
    Connector,
}

fn legal(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

fn parts(template: &str) -> Result<Vec<Part<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = template;
    while !rest.is_empty() {
        match rest.find('{') {
            Some(0) => {
                let end = rest
                    .find('}')
                    .ok_or_else(|| format!("{template:?}: an unclosed '{{'"))?;
                out.push(match &rest[1..end] {
                    "table" => Part::Table,
                    "stream" => Part::Stream,
                    "connector" => Part::Connector,
                    other => {
                        return Err(format!(
                            "{template:?}: unknown placeholder {{{other}}}, expected {{table}}, {{stream}} or {{connector}}"
                        ))
                    }
                });
                rest = &rest[end + 1..];
            }
            found => {
                let end = found.unwrap_or(rest.len());
                out.push(Part::Text(&rest[..end]));
                rest = &rest[end..];
            }
        }
    }
    Ok(out)
}

impl TopicTemplate {
    pub fn parse(template: &str) -> Result<TopicTemplate, String> {
        if template.is_empty() {
            return Err("empty: a topic name is 1 to 249 characters".into());
        }
        for part in parts(template)? {
            if let Part::Text(text) = part {
                if let Some(bad) = text.chars().find(|c| !legal(*c)) {
                    return Err(format!(
                        "{template:?}: {bad:?} cannot be in a topic name (letters, digits, '.', '_', '-')"
                    ));
                }
            }
        }
        if template == "." || template == ".." {
            return Err(format!("{template:?} is not a topic name"));
        }
        Ok(TopicTemplate(template.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The topic for records of `stream_arn` (a DynamoDB stream or a Kinesis stream).
    pub fn render(&self, connector: &str, stream_arn: &str) -> Result<String, String> {
        let source = SourceName::of(stream_arn);
        let mut out = String::new();
        for part in parts(&self.0)? {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Connector => out.push_str(connector),
                Part::Stream => out.push_str(source.stream().ok_or_else(|| {
                    format!("{{stream}}: {stream_arn:?} is not a stream ARN")
                })?),
                Part::Table => out.push_str(match source {
                    SourceName::Table(t) => t,
                    SourceName::KinesisStream(_) => {
                        return Err(format!(
                            "{{table}} names a DynamoDB table, but the source is the Kinesis stream {stream_arn:?} (use {{stream}})"
                        ))
                    }
                    SourceName::Unknown => {
                        return Err(format!("{{table}}: {stream_arn:?} is not a stream ARN"))
                    }
                }),
            }
        }
        if out.len() > MAX_LEN {
            return Err(format!(
                "{out:?} is {} characters; a topic name has at most {MAX_LEN}",
                out.len()
            ));
        }
        if let Some(bad) = out.chars().find(|c| !legal(*c)) {
            return Err(format!("{out:?}: {bad:?} cannot be in a topic name"));
        }
        Ok(out)
    }
}

/// What a source's ARN names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SourceName<'a> {
    /// `arn:aws:dynamodb:REGION:ACCOUNT:table/NAME/stream/LABEL`
    Table(&'a str),
    /// `arn:aws:kinesis:REGION:ACCOUNT:stream/NAME`
    KinesisStream(&'a str),
    Unknown,
}

impl<'a> SourceName<'a> {
    fn of(arn: &'a str) -> SourceName<'a> {
        let resource = arn.splitn(6, ':').nth(5).unwrap_or("");
        if let Some(rest) = resource.strip_prefix("table/") {
            let name = rest.split('/').next().unwrap_or("");
            if !name.is_empty() {
                return SourceName::Table(name);
            }
        }
        if let Some(name) = resource.strip_prefix("stream/") {
            if !name.is_empty() && !name.contains('/') {
                return SourceName::KinesisStream(name);
            }
        }
        SourceName::Unknown
    }

    /// `{stream}`: a Kinesis stream's name; a DynamoDB stream has no name of its own, so its
    /// table's.
    fn stream(self) -> Option<&'a str> {
        match self {
            SourceName::Table(n) | SourceName::KinesisStream(n) => Some(n),
            SourceName::Unknown => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DDB: &str =
        "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2026-11-30T00:00:00.000";
    const KDS: &str = "arn:aws:kinesis:eu-west-1:123456789012:stream/clicks";

    #[test]
    fn placeholders_are_filled_from_the_source() {
        let t = TopicTemplate::parse("cdc.{connector}.{table}").unwrap();
        assert_eq!(t.render("c1", DDB).unwrap(), "cdc.c1.orders");
        let t = TopicTemplate::parse("{stream}-{stream}").unwrap();
        assert_eq!(t.render("c1", DDB).unwrap(), "orders-orders");
        assert_eq!(t.render("c1", KDS).unwrap(), "clicks-clicks");
        let plain = TopicTemplate::parse("changes").unwrap();
        assert_eq!(plain.render("c1", KDS).unwrap(), "changes");
    }

    #[test]
    fn a_table_placeholder_with_a_kinesis_source_says_so() {
        let t = TopicTemplate::parse("{table}").unwrap();
        let e = t.render("c1", KDS).unwrap_err();
        assert!(
            e.contains("Kinesis stream") && e.contains("{stream}"),
            "{e}"
        );
    }

    #[test]
    fn bad_templates_are_refused_naming_what_is_wrong() {
        for (bad, says) in [
            ("", "empty"),
            ("a b", "' '"),
            ("cdc/{table}", "'/'"),
            ("{tabel}", "unknown placeholder {tabel}"),
            ("x{table", "unclosed"),
            ("..", "not a topic name"),
        ] {
            let e = TopicTemplate::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn rendered_names_are_checked() {
        let t = TopicTemplate::parse("{connector}").unwrap();
        assert!(t.render("has space", DDB).unwrap_err().contains("' '"));
        let long = "x".repeat(250);
        assert!(t.render(&long, DDB).unwrap_err().contains("at most 249"));
        assert!(
            t.render("ok", "not-an-arn").is_ok(),
            "{{connector}} needs no ARN"
        );
        let s = TopicTemplate::parse("{stream}").unwrap();
        assert!(s
            .render("ok", "not-an-arn")
            .unwrap_err()
            .contains("not a stream ARN"));
    }
}
