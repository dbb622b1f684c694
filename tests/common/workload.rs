//! A DynamoDB workload with a known outcome: inserts, updates and deletes over many items, every
//! attribute type, and the stream records each change must produce.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue as Av, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, StreamSpecification, StreamViewType,
};
use base64::Engine;
use serde_json::{json, Value};

pub type Item = HashMap<String, Av>;

/// What one write must show in the stream.
#[derive(Clone, Debug)]
pub struct Change {
    pub op: &'static str,
    pub old: Option<Item>,
    pub new: Option<Item>,
}

/// Creates a table keyed by `id` (S) with a stream of `view`; returns its stream ARN.
pub async fn create_table(
    client: &aws_sdk_dynamodb::Client,
    name: &str,
    view: StreamViewType,
) -> String {
    create_table_with(client, name, Some(view))
        .await
        .expect("a stream ARN")
}

/// Creates a table keyed by `id` (S), on demand, with a stream of `view` if given; returns the
/// stream's ARN.
pub async fn create_table_with(
    client: &aws_sdk_dynamodb::Client,
    name: &str,
    view: Option<StreamViewType>,
) -> Option<String> {
    let stream = view.map(|view| {
        StreamSpecification::builder()
            .stream_enabled(true)
            .stream_view_type(view)
            .build()
            .unwrap()
    });
    let out = client
        .create_table()
        .table_name(name)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .billing_mode(BillingMode::PayPerRequest)
        .set_stream_specification(stream)
        .send()
        .await
        .expect("create table");
    out.table_description()
        .unwrap()
        .latest_stream_arn()
        .map(str::to_string)
}

/// Every item of a table, by `id` (a consistent scan, all pages).
pub async fn scan_items(client: &aws_sdk_dynamodb::Client, table: &str) -> BTreeMap<String, Item> {
    let mut out = BTreeMap::new();
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("scan");
        for item in page.items.unwrap_or_default() {
            if let Some(Av::S(id)) = item.get("id") {
                out.insert(id.clone(), item);
            }
        }
        start = page.last_evaluated_key;
        if start.is_none() {
            return out;
        }
    }
}

/// Every attribute type, varying with `version`.
pub fn item(id: &str, version: u32) -> Item {
    let v = version as u64;
    let mut m = HashMap::new();
    m.insert("id".into(), Av::S(id.into()));
    m.insert("version".into(), Av::N(v.to_string()));
    m.insert(
        "big".into(),
        Av::N(format!("1234567890123456789012345678901234567{}", v % 10)),
    );
    m.insert("ratio".into(), Av::N(format!("-0.{}5", v)));
    m.insert("name".into(), Av::S(format!("item {id} v{v} ✓")));
    m.insert(
        "blob".into(),
        Av::B(Blob::new(vec![0u8, 255, (v % 256) as u8, 10, 13])),
    );
    m.insert(
        "tags".into(),
        Av::Ss(vec![format!("t{v}"), "common".into()]),
    );
    m.insert("nums".into(), Av::Ns(vec![v.to_string(), "3.14".into()]));
    m.insert(
        "blobs".into(),
        Av::Bs(vec![
            Blob::new(vec![1, 2, 3]),
            Blob::new(vec![(v % 200) as u8 + 4]),
        ]),
    );
    m.insert(
        "nested".into(),
        Av::M(HashMap::from([
            ("level".into(), Av::N("2".into())),
            (
                "list".into(),
                Av::L(vec![
                    Av::S("a".into()),
                    Av::N(v.to_string()),
                    Av::Bool(v % 2 == 0),
                    Av::Null(true),
                ]),
            ),
            (
                "deeper".into(),
                Av::M(HashMap::from([("x".into(), Av::S(format!("{v}")))])),
            ),
        ])),
    );
    m.insert("flag".into(), Av::Bool(v % 3 == 0));
    m.insert("nothing".into(), Av::Null(true));
    m
}

/// `changes` writes over `items` items, deterministic: each item is inserted, then updated or
/// deleted (and re-inserted later). Returns the item ids' expected change lists, in write order.
pub fn plan(items: usize, changes: usize) -> Vec<(String, Vec<Change>)> {
    let mut plans: Vec<(String, Vec<Change>)> = (0..items)
        .map(|i| (format!("item-{i:04}"), Vec::new()))
        .collect();
    let mut state: Vec<Option<Item>> = vec![None; items];
    let mut version = vec![0u32; items];
    let mut rng: u64 = 0x5eed;
    for n in 0..changes {
        let i = n % items;
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let id = plans[i].0.clone();
        let change = match state[i].clone() {
            None => {
                version[i] += 1;
                let new = item(&id, version[i]);
                state[i] = Some(new.clone());
                Change {
                    op: "INSERT",
                    old: None,
                    new: Some(new),
                }
            }
            Some(old) if (rng >> 33) % 4 == 0 => {
                state[i] = None;
                Change {
                    op: "REMOVE",
                    old: Some(old),
                    new: None,
                }
            }
            Some(old) => {
                version[i] += 1;
                let new = item(&id, version[i]);
                state[i] = Some(new.clone());
                Change {
                    op: "MODIFY",
                    old: Some(old),
                    new: Some(new),
                }
            }
        };
        plans[i].1.push(change);
    }
    plans
}

/// Applies the plan, round-robin over the items so that their changes interleave in the stream.
/// One writer per table: moto numbers stream records with `len(records) + start` without a lock,
/// so concurrent writes to one table would get duplicate sequence numbers.
pub async fn apply(client: &aws_sdk_dynamodb::Client, table: &str, plan: &[(String, Vec<Change>)]) {
    let lanes = 1;
    let mut tasks = Vec::new();
    for lane in 0..lanes {
        let client = client.clone();
        let table = table.to_string();
        let mine: Vec<(String, Vec<Change>)> = plan
            .iter()
            .enumerate()
            .filter(|(i, _)| i % lanes == lane)
            .map(|(_, p)| p.clone())
            .collect();
        tasks.push(tokio::spawn(async move {
            let rounds = mine.iter().map(|(_, c)| c.len()).max().unwrap_or(0);
            for r in 0..rounds {
                for (id, changes) in &mine {
                    let Some(c) = changes.get(r) else { continue };
                    match &c.new {
                        Some(new) => {
                            client
                                .put_item()
                                .table_name(&table)
                                .set_item(Some(new.clone()))
                                .send()
                                .await
                                .expect("put");
                        }
                        None => {
                            client
                                .delete_item()
                                .table_name(&table)
                                .key("id", Av::S(id.clone()))
                                .send()
                                .await
                                .expect("delete");
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// DynamoDB's typed JSON, as a Lambda function receives it. Sets are sorted (they are
/// unordered in DynamoDB; outputs are compared after `normalize_sets`).
pub fn typed(v: &Av) -> Value {
    match v {
        Av::S(s) => json!({ "S": s }),
        Av::N(n) => json!({ "N": n }),
        Av::B(b) => json!({ "B": b64(b.as_ref()) }),
        Av::Ss(s) => json!({ "SS": s }),
        Av::Ns(s) => json!({ "NS": s }),
        Av::Bs(s) => json!({ "BS": s.iter().map(|b| b64(b.as_ref())).collect::<Vec<_>>() }),
        Av::M(m) => json!({ "M": typed_item(m) }),
        Av::L(l) => json!({ "L": l.iter().map(typed).collect::<Vec<_>>() }),
        Av::Null(b) => json!({ "NULL": b }),
        Av::Bool(b) => json!({ "BOOL": b }),
        other => panic!("unexpected {other:?}"),
    }
}

pub fn typed_item(m: &Item) -> Value {
    Value::Object(m.iter().map(|(k, v)| (k.clone(), typed(v))).collect())
}

fn number(n: &str) -> Value {
    Value::Number(
        n.parse()
            .unwrap_or_else(|_| panic!("not a JSON number: {n}")),
    )
}

/// Ordinary JSON, as the `plain` format writes it (numbers with their exact digits).
pub fn plain(v: &Av) -> Value {
    match v {
        Av::S(s) => json!(s),
        Av::N(n) => number(n),
        Av::B(b) => json!(b64(b.as_ref())),
        Av::Ss(s) => json!(s),
        Av::Ns(s) => Value::Array(s.iter().map(|n| number(n)).collect()),
        Av::Bs(s) => json!(s.iter().map(|b| b64(b.as_ref())).collect::<Vec<_>>()),
        Av::M(m) => plain_item(m),
        Av::L(l) => Value::Array(l.iter().map(plain).collect()),
        Av::Null(_) => Value::Null,
        Av::Bool(b) => json!(b),
        other => panic!("unexpected {other:?}"),
    }
}

pub fn plain_item(m: &Item) -> Value {
    Value::Object(m.iter().map(|(k, v)| (k.clone(), plain(v))).collect())
}

/// Sorts the elements of every set so that outputs compare regardless of set order: typed sets
/// (`SS`, `NS`, `BS` members) and, in plain items, the known set attributes.
pub fn normalize_sets(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                let is_set = matches!(k.as_str(), "SS" | "NS" | "BS" | "tags" | "nums" | "blobs");
                if let (true, Value::Array(a)) = (is_set, &mut *child) {
                    a.sort_by_key(|x| x.to_string());
                } else {
                    normalize_sets(child);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(normalize_sets),
        _ => {}
    }
}

/// Which images a record of `view` carries for `change`.
pub fn images(view: &str, c: &Change) -> (Option<Item>, Option<Item>) {
    let (old, new) = (c.old.clone(), c.new.clone());
    match view {
        "KEYS_ONLY" => (None, None),
        "NEW_IMAGE" => (None, new),
        "OLD_IMAGE" => (old, None),
        "NEW_AND_OLD_IMAGES" => (old, new),
        other => panic!("view {other}"),
    }
}

pub fn by_item(lines: &[Value], id_of: impl Fn(&Value) -> String) -> BTreeMap<String, Vec<&Value>> {
    let mut m: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for l in lines {
        m.entry(id_of(l)).or_default().push(l);
    }
    m
}
