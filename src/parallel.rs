//! CPU-bound work over a slice on all cores, results in order: what a GPU phase would otherwise wait for on one core
//! (tokenising a sampling phase's prompts, or a fine-tuning run's examples).

/// `f(i, &items[i])` for every item, on up to every CPU core with at least `min_per_thread` items a thread, in item
/// order; the first error in item order is returned. A panic in `f` is re-raised.
pub fn map_in_order<T, R, E>(
    items: &[T],
    min_per_thread: usize,
    f: impl Fn(usize, &T) -> Result<R, E> + Sync,
) -> Result<Vec<R>, E>
where
    T: Sync,
    R: Send,
    E: Send,
{
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cores.min(items.len().div_ceil(min_per_thread.max(1))).max(1);
    let per_thread = items.len().div_ceil(threads).max(1);
    let f = &f;
    let parts: Vec<Result<Vec<R>, E>> = std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(per_thread)
            .enumerate()
            .map(|(k, part)| {
                s.spawn(move || part.iter().enumerate().map(|(j, item)| f(k * per_thread + j, item)).collect())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    });
    let mut out = Vec::with_capacity(items.len());
    for part in parts {
        out.extend(part?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_keep_item_order_and_the_first_error_in_order_wins() {
        let items: Vec<u64> = (0..1000).collect();
        let squares = map_in_order(&items, 7, |i, x| Ok::<_, String>((i as u64, x * x))).unwrap();
        assert_eq!(squares, items.iter().map(|&x| (x, x * x)).collect::<Vec<_>>());
        let failing = map_in_order(&items, 7, |i, _| if i == 613 || i == 980 { Err(i) } else { Ok(i) });
        assert_eq!(failing, Err(613));
        assert_eq!(map_in_order(&[] as &[u8], 16, |_, x| Ok::<_, ()>(*x)), Ok(vec![]));
    }
}
