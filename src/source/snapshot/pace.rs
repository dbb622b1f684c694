//! How fast a snapshot segment may scan: read capacity as DynamoDB bills it, and a token
//! bucket per segment holding the segment to its share of `rate_limit`. Pure, so that the
//! arithmetic is tested without a table.

use std::time::Duration;

use tokio::time::Instant;

use crate::source::record::{AttributeValue, Item};

/// Items in the first page of a rate-limited segment, to learn their size before a page is
/// sized to the budget.
pub const PROBE_PAGE: u32 = 10;

/// The size of an item as DynamoDB counts it for capacity: each attribute's name plus its
/// value (strings and binaries by length, numbers about one byte per two digits plus one,
/// one byte for booleans and nulls, three bytes plus one per element for lists and maps).
pub fn item_size(item: &Item) -> u64 {
    item.iter()
        .map(|(name, v)| name.len() as u64 + value_size(v))
        .sum()
}

fn value_size(v: &AttributeValue) -> u64 {
    match v {
        AttributeValue::S(s) => s.len() as u64,
        AttributeValue::N(n) => number_size(n),
        AttributeValue::B(b) => b.len() as u64,
        AttributeValue::Ss(v) => v.iter().map(|s| s.len() as u64).sum(),
        AttributeValue::Ns(v) => v.iter().map(|n| number_size(n)).sum(),
        AttributeValue::Bs(v) => v.iter().map(|b| b.len() as u64).sum(),
        AttributeValue::M(m) => 3 + m.len() as u64 + item_size(m),
        AttributeValue::L(l) => 3 + l.len() as u64 + l.iter().map(value_size).sum::<u64>(),
        AttributeValue::Null(_) | AttributeValue::Bool(_) => 1,
    }
}

fn number_size(n: &str) -> u64 {
    let digits = n.bytes().filter(u8::is_ascii_digit).count() as u64;
    digits.div_ceil(2) + 1
}

/// Read capacity units a Scan page of `bytes` uses: the items' sizes summed and rounded up to
/// 4 KB (at least one unit per call), halved when eventually consistent.
pub fn capacity_units(bytes: u64, consistent: bool) -> f64 {
    let units = bytes.div_ceil(4096).max(1) as f64;
    if consistent {
        units
    } else {
        units / 2.0
    }
}

/// A segment's share of the scan's rate: with `segments` shares of `rate_limit`, the scan as a
/// whole stays within it however the segments are spread over the fleet.
pub fn share(rate_limit: u64, segments: u32) -> Option<f64> {
    (rate_limit > 0).then(|| rate_limit as f64 / f64::from(segments.max(1)))
}

/// A token bucket in capacity units: it fills at `per_second` up to one second's worth, a
/// page's units are taken out after the page (the balance may go below zero), and the next
/// call waits until the balance is back at zero.
#[derive(Clone, Debug)]
pub struct ScanPace {
    per_second: f64,
    balance: f64,
    at: Instant,
    /// Average item size seen so far (bytes), to size pages.
    avg_item: Option<f64>,
}

impl ScanPace {
    pub fn new(per_second: f64, now: Instant) -> Self {
        ScanPace {
            per_second,
            balance: per_second,
            at: now,
            avg_item: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.balance = (self.balance + elapsed * self.per_second).min(self.per_second);
        self.at = now;
    }

    /// How long to wait before the next Scan call.
    pub fn wait(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.balance >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.balance / self.per_second)
        }
    }

    /// A page of `items` items and `bytes` bytes was read, for `units`.
    pub fn spent(&mut self, units: f64, items: usize, bytes: u64, now: Instant) {
        self.refill(now);
        self.balance -= units;
        if items > 0 {
            let avg = bytes as f64 / items as f64;
            self.avg_item = Some(match self.avg_item {
                Some(a) => (a * 3.0 + avg) / 4.0,
                None => avg,
            });
        }
    }

    /// Items for the next page: about one second of the budget, within 1..=`max`. Until the
    /// item size is known, a small probe page.
    pub fn page_limit(&self, consistent: bool, max: u32) -> u32 {
        let Some(avg) = self.avg_item else {
            return PROBE_PAGE.min(max);
        };
        let bytes_per_unit = if consistent { 4096.0 } else { 8192.0 };
        let items = (self.per_second * bytes_per_unit / avg.max(1.0)).floor();
        (items as u32).clamp(1, max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn item(pairs: &[(&str, AttributeValue)]) -> Item {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect::<BTreeMap<_, _>>()
    }

    #[test]
    fn sizes_count_names_and_values() {
        let i = item(&[
            ("id", AttributeValue::S("abc".into())),
            ("n", AttributeValue::N("12345".into())),
            ("ok", AttributeValue::Bool(true)),
        ]);
        // "id"+"abc" = 5, "n"+ceil(5/2)+1 = 1+4 = 5, "ok"+1 = 3
        assert_eq!(item_size(&i), 13);
        let nested = item(&[(
            "m",
            AttributeValue::M(item(&[("a", AttributeValue::S("xy".into()))])),
        )]);
        assert_eq!(item_size(&nested), 1 + 3 + 1 + 3);
    }

    #[test]
    fn capacity_is_rounded_up_per_page_and_halved_when_eventually_consistent() {
        assert_eq!(capacity_units(0, true), 1.0);
        assert_eq!(capacity_units(4096, true), 1.0);
        assert_eq!(capacity_units(4097, true), 2.0);
        assert_eq!(capacity_units(4097, false), 1.0);
        assert_eq!(capacity_units(1 << 20, false), 128.0);
    }

    #[test]
    fn shares_add_up_to_the_limit() {
        assert_eq!(share(0, 4), None);
        assert_eq!(share(100, 4), Some(25.0));
        assert_eq!(share(100, 0), Some(100.0));
    }

    #[test]
    fn pages_are_sized_to_a_second_of_the_budget() {
        let now = Instant::now();
        let mut p = ScanPace::new(10.0, now);
        assert_eq!(p.page_limit(false, 1000), PROBE_PAGE);
        assert_eq!(p.page_limit(false, 3), 3);
        p.spent(1.0, 10, 10 * 2048, now);
        // 10 units/s × 8 KB per unit / 2 KB per item = 40 items.
        assert_eq!(p.page_limit(false, 1000), 40);
        assert_eq!(p.page_limit(true, 1000), 20);
        assert_eq!(p.page_limit(true, 7), 7);
    }

    proptest! {
        /// Whatever the pages cost, the units spent by the time each call is made never
        /// exceed one second's burst plus the rate times the time elapsed.
        #[test]
        fn never_above_the_rate_plus_one_second(
            rate in 1.0f64..500.0,
            pages in prop::collection::vec(0.5f64..300.0, 1..60),
        ) {
            let start = Instant::now();
            let mut now = start;
            let mut p = ScanPace::new(rate, now);
            let mut spent_before_call = 0.0;
            for units in pages {
                now += p.wait(now);
                let elapsed = now.duration_since(start).as_secs_f64();
                prop_assert!(spent_before_call <= rate * (elapsed + 1.0) + 1e-6,
                    "spent {spent_before_call} by {elapsed} s at {rate}/s");
                p.spent(units, 1, 100, now);
                spent_before_call += units;
            }
        }
    }
}
