//! Splitting generation work across devices and putting the results back in order. Shards are contiguous runs of
//! the request list balanced by a per-request weight (the samples it asks for), so each device gets about the
//! same number of samples; merging checks every shard answered every request it was given. Because a sample's
//! seed derives from its prompt's key and its index (never its batch position), where a request runs does not
//! change what is drawn for it.

use std::ops::Range;

use super::DistError;

/// Contiguous ranges of `0..weights.len()`, one per part (some may be empty), each close to `total / parts` in
/// weight: range k ends at the first request whose cumulative weight reaches `ceil((k + 1) * total / parts)`.
pub fn balanced_ranges(weights: &[u64], parts: usize) -> Vec<Range<usize>> {
    let parts = parts.max(1);
    let total: u128 = weights.iter().map(|&w| w as u128).sum();
    let mut ranges = Vec::with_capacity(parts);
    let (mut start, mut end, mut cumulative) = (0usize, 0usize, 0u128);
    for k in 1..=parts {
        if k == parts {
            end = weights.len();
        } else {
            let target = (total * k as u128).div_ceil(parts as u128);
            while end < weights.len() && cumulative < target {
                cumulative += weights[end] as u128;
                end += 1;
            }
        }
        ranges.push(start..end);
        start = end;
    }
    ranges
}

/// Splits `items` by `ranges` (from [`balanced_ranges`]).
pub fn split<'a, T>(items: &'a [T], ranges: &[Range<usize>]) -> Vec<&'a [T]> {
    ranges.iter().map(|r| &items[r.clone()]).collect()
}

/// Concatenates the shards' results in shard order, checking that shard k returned one result per request of
/// `ranges[k]`.
pub fn merge<T>(ranges: &[Range<usize>], results: Vec<Vec<T>>) -> Result<Vec<T>, DistError> {
    if results.len() != ranges.len() {
        return Err(DistError::Shard(format!("{} shard results for {} shards", results.len(), ranges.len())));
    }
    let mut merged = Vec::with_capacity(ranges.last().map_or(0, |r| r.end));
    for (k, (range, shard)) in ranges.iter().zip(results).enumerate() {
        if shard.len() != range.len() {
            return Err(DistError::Shard(format!(
                "shard {k} returned {} results for {} requests",
                shard.len(),
                range.len()
            )));
        }
        if range.start != merged.len() {
            return Err(DistError::Shard(format!(
                "shard {k} starts at {} after {} results",
                range.start,
                merged.len()
            )));
        }
        merged.extend(shard);
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_contiguous_cover_everything_and_balance_weight() {
        for n in 0..40usize {
            for parts in 1..6 {
                let weights: Vec<u64> = (0..n).map(|i| 1 + (i as u64 * 7) % 5).collect();
                let ranges = balanced_ranges(&weights, parts);
                assert_eq!(ranges.len(), parts);
                assert_eq!(ranges.first().unwrap().start, 0);
                assert_eq!(ranges.last().unwrap().end, n);
                for w in ranges.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                }
                // No part is heavier than its fair share plus one request.
                let total: u64 = weights.iter().sum();
                for r in &ranges {
                    let w: u64 = weights[r.clone()].iter().sum();
                    assert!(w <= total / parts as u64 + 5, "n={n} parts={parts} {ranges:?}");
                }
            }
        }
        assert_eq!(balanced_ranges(&[1, 1, 1, 1], 2), vec![0..2, 2..4]);
        assert_eq!(balanced_ranges(&[6, 1, 1, 1, 1, 1, 1], 2), vec![0..1, 1..7]);
        assert_eq!(balanced_ranges(&[1], 3), vec![0..1, 1..1, 1..1]);
    }

    #[test]
    fn merge_restores_request_order() {
        let items: Vec<u32> = (0..11).collect();
        let ranges = balanced_ranges(&[1; 11], 3);
        let shards = split(&items, &ranges);
        let results: Vec<Vec<String>> = shards.iter().map(|s| s.iter().map(|i| format!("r{i}")).collect()).collect();
        let merged = merge(&ranges, results).unwrap();
        assert_eq!(merged, items.iter().map(|i| format!("r{i}")).collect::<Vec<_>>());
    }

    #[test]
    fn merge_rejects_a_shard_that_lost_results() {
        let ranges = vec![0..2, 2..3];
        let e = merge(&ranges, vec![vec![1, 2], vec![]]).unwrap_err();
        assert_eq!(e.to_string(), "sharded generation: shard 1 returned 0 results for 1 requests");
        let e = merge(&ranges, vec![vec![1, 2]]).unwrap_err();
        assert_eq!(e.to_string(), "sharded generation: 1 shard results for 2 shards");
    }
}
