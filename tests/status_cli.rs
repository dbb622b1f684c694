//! The operator commands against a live fleet: `status` (its rows match the lease table, every
//! owned shard once with its owner, a killed worker's leases show as expired and then move) and
//! `checkpoint set|reset` (refused on a live lease without --force; a reset shard is read again
//! from the start).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::harness::{self, Fleet};
use common::*;
use serde_json::Value;

fn status(config: &Path, extra: &[&str]) -> (i32, String, String) {
    let o = shardbridge()
        .arg("status")
        .arg("--config")
        .arg(config)
        .args(extra)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn status_json(config: &Path) -> Value {
    let (code, out, err) = status(config, &["--json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("--json parses ({e}): {out}"))
}

fn checkpoint(config: &Path, args: &[&str]) -> (i32, String, String) {
    let o = shardbridge()
        .arg("checkpoint")
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// shard id -> (owner, state) of the status document's one connector.
fn owners(doc: &Value) -> BTreeMap<String, (Option<String>, String)> {
    let c = &doc["connectors"][0];
    c["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["shard_id"].as_str().unwrap().to_string(),
                (
                    s["owner"].as_str().map(str::to_string),
                    s["state"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect()
}

/// Per source shard: lines written so far by every worker, and distinct records among them
/// (a killed worker's last batch may have been written twice).
fn lines_per_shard(dir: &Path) -> BTreeMap<String, (usize, usize)> {
    let mut lines: BTreeMap<String, (usize, BTreeSet<String>)> = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "jsonl") {
            for l in read_lines(&e.path()) {
                let entry = lines
                    .entry(l["shard"].as_str().unwrap().to_string())
                    .or_default();
                entry.0 += 1;
                entry
                    .1
                    .insert(l["sequenceNumber"].as_str().unwrap().to_string());
            }
        }
    }
    lines
        .into_iter()
        .map(|(shard, (n, distinct))| (shard, (n, distinct.len())))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_checkpoint_commands_on_a_live_fleet() {
    let (aws, kinesis) = (aws_endpoint(), kinesis_endpoint());
    let k = harness::kinesis_client(&kinesis).await;
    let ddb = aws_sdk_dynamodb::Client::new(&sdk_config(&aws).await);
    let (stream, leases) = (unique("status"), unique("status-leases"));
    harness::create_stream(&k, &stream, 4).await;
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().to_path_buf();
    let (a, kk, s, l) = (aws.clone(), kinesis.clone(), stream.clone(), leases.clone());
    let mut fleet = Fleet::new(dir.path(), move |id| {
        harness::kinesis_raw_worker(id, "status", &a, &kk, &s, &l, free_port())
            + &format!(
                "[connectors.sink]\ntype = \"file\"\npath = \"{}\"\n",
                out_dir.join(format!("{id}.jsonl")).display()
            )
    });
    for id in ["w1", "w2", "w3"] {
        fleet.start(id);
    }
    let config = dir.path().join("w1.toml");
    let keys: Vec<String> = (0..40).map(|i| format!("key-{i:02}")).collect();
    harness::put_version(&k, &stream, &keys, 1).await;

    // Every shard owned by a live worker.
    let doc = wait_for("all 4 shards read", Duration::from_secs(60), || {
        let doc = status_json(&config);
        let o = owners(&doc);
        (o.len() == 4 && o.values().all(|(w, st)| w.is_some() && st == "reading")).then_some(doc)
    });
    let c = &doc["connectors"][0];
    assert_eq!(c["name"], "status");
    assert_eq!(c["lease_table"], leases.as_str());
    for s in c["shards"].as_array().unwrap() {
        for field in [
            "shard_id",
            "parents",
            "owner",
            "lease_counter",
            "checkpoint",
            "pending_intent",
            "state",
            "behind_ms",
        ] {
            assert!(s.get(field).is_some(), "{field} in {s}");
        }
    }
    // The rows match the lease table. The fleet may still be balancing (a lease moving between
    // the status call and the scan): a mismatch is looked at again, a lasting one fails.
    let mut doc = doc;
    let mut attempts = 0;
    let table = loop {
        let scan = ddb
            .scan()
            .table_name(&leases)
            .consistent_read(true)
            .send()
            .await
            .unwrap();
        let table: BTreeMap<String, String> = scan
            .items()
            .iter()
            .map(|i| {
                (
                    i["leaseKey"].as_s().unwrap().clone(),
                    i["leaseOwner"].as_s().unwrap().clone(),
                )
            })
            .collect();
        let listed: BTreeMap<String, String> = owners(&doc)
            .into_iter()
            .filter_map(|(k, (o, _))| Some((k, o?)))
            .collect();
        attempts += 1;
        if listed == table || attempts == 20 {
            assert_eq!(listed, table, "status shows the lease table's owners");
            break table;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        doc = status_json(&config);
    };
    let (code, text, _) = status(&config, &[]);
    assert_eq!(code, 0);
    assert!(text.contains("SHARD") && text.contains("reading"), "{text}");
    for shard in table.keys() {
        assert_eq!(
            text.matches(shard.as_str()).count(),
            1,
            "{shard} once in\n{text}"
        );
    }

    // A worker killed: its leases show as expired (failover 3 s), then move to the others.
    let victim = table.values().next().unwrap().clone();
    let theirs: BTreeSet<String> = table
        .iter()
        .filter(|(_, o)| **o == victim)
        .map(|(k, _)| k.clone())
        .collect();
    // The others are paused, so that nobody takes the victim's leases before status has seen
    // them expire (failover 3 s); resumed, they take them.
    let others: Vec<String> = fleet
        .workers
        .keys()
        .filter(|w| **w != victim)
        .cloned()
        .collect();
    for w in &others {
        fleet.workers[w].signal("STOP");
    }
    fleet.kill(&victim);
    wait_for(
        "the killed worker's leases expired",
        Duration::from_secs(30),
        || {
            let o = owners(&status_json(&config));
            theirs.iter().all(|s| o[s].1 == "expired").then_some(())
        },
    );
    for w in &others {
        fleet.workers[w].signal("CONT");
    }
    let started = Instant::now();
    loop {
        let o = owners(&status_json(&config));
        let moved = theirs
            .iter()
            .all(|s| o[s].0.as_deref().is_some_and(|w| w != victim) && o[s].1 == "reading");
        if moved {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the killed worker's leases did not move: {o:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Moving a checkpoint by hand: refused while a live worker holds the lease.
    let shard = theirs.iter().next().unwrap().clone();
    let args = [
        "set",
        "--connector",
        "status",
        "--shard",
        &shard,
        "--trim-horizon",
    ];
    let (code, _, err) = checkpoint(&config, &args);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is held by"), "{err}");
    let (code, _, err) = checkpoint(&config, &["set", "--connector", "nope", "--shard", &shard]);
    assert_eq!(code, 2, "{err}");

    // A reset shard is read again from the start: with --force on a live lease here.
    let before = wait_for("every record delivered", Duration::from_secs(60), || {
        let n = lines_per_shard(dir.path());
        (n.values().map(|(_, distinct)| distinct).sum::<usize>() >= keys.len()).then_some(n)
    });
    let with_force = [
        "reset",
        "--connector",
        "status",
        "--shard",
        &shard,
        "--force",
    ];
    let (code, out, err) = checkpoint(&config, &with_force);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("shard {shard}: checkpoint ")),
        "{out}"
    );
    assert!(out.contains("-> TRIM_HORIZON"), "{out}");
    wait_for("the shard read again", Duration::from_secs(60), || {
        let now = lines_per_shard(dir.path());
        let (lines, distinct) = before[&shard];
        (now[&shard].0 >= lines + distinct).then_some(())
    });
    fleet.stop_all();
    // A missing table is reported, not a crash.
    let other = dir.path().join("other.toml");
    std::fs::write(
        &other,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace(&leases, &unique("missing-leases")),
    )
    .unwrap();
    let doc = status_json(&other);
    assert_eq!(doc["connectors"][0]["lease_table_exists"], false);
    assert_eq!(doc["connectors"][0]["shards"], serde_json::json!([]));
}
