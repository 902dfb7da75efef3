//! The id maps of the kept namespace and of the sandboxes nested in it, as plain data.
//!
//! A run's full map says which host id each inside id is (`supervisor::idmap::full_map`).
//! The holder maps the same host ids once, the caller's own at 0 and the subordinate
//! ranges from 1 on, so a nested sandbox's map names holder ids: each line of the run's
//! map is translated, and split wherever it crosses from one line of the holder's map to
//! the next (the kernel accepts a nested line only inside one extent of the parent's map).

use crate::plan::ids::IdRange;

/// The kernel's limit on lines in one map.
const MAX_LINES: usize = 340;

/// A map as `/proc/PID/uid_map` shows it: `inside outside count` lines.
pub fn parse(text: &str) -> Option<Vec<IdRange>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut f = line.split_whitespace().map(str::parse::<u32>);
            let range = IdRange {
                inside: f.next()?.ok()?,
                outside: f.next()?.ok()?,
                count: f.next()?.ok()?,
            };
            f.next().is_none().then_some(range)
        })
        .collect()
}

/// The same mapping, in inside order with contiguous lines merged: two maps that map the
/// same ids the same way compare equal, however their lines were cut.
pub fn normalize(map: &[IdRange]) -> Vec<IdRange> {
    let mut lines: Vec<IdRange> = map.iter().copied().filter(|r| r.count > 0).collect();
    lines.sort_unstable_by_key(|r| r.inside);
    let mut out: Vec<IdRange> = Vec::with_capacity(lines.len());
    for r in lines {
        match out.last_mut() {
            Some(last)
                if u64::from(last.inside) + u64::from(last.count) == u64::from(r.inside)
                    && u64::from(last.outside) + u64::from(last.count) == u64::from(r.outside) =>
            {
                last.count += r.count;
            }
            _ => out.push(r),
        }
    }
    out
}

/// The holder's map for a run's full map: the caller's host id (`host_id`) at 0, then every
/// other host id of the run's map, in the run's inside order, from 1 on.
pub fn holder_map(run: &[IdRange], host_id: u32) -> Vec<IdRange> {
    let mut others: Vec<IdRange> = run
        .iter()
        .copied()
        .filter(|r| !(r.outside == host_id && r.count == 1))
        .collect();
    others.sort_unstable_by_key(|r| r.inside);
    let mut map = vec![IdRange {
        inside: 0,
        outside: host_id,
        count: 1,
    }];
    let mut next: u64 = 1;
    for r in others {
        if next + u64::from(r.count) > u64::from(u32::MAX) {
            break;
        }
        map.push(IdRange {
            inside: next as u32,
            outside: r.outside,
            count: r.count,
        });
        next += u64::from(r.count);
    }
    normalize(&map)
}

/// The run's map (inside -> host) as a map nested in the holder's (inside -> holder id),
/// split along the holder's lines; None when the holder does not map every host id the run
/// needs, or the result would have more lines than the kernel takes.
pub fn nest(run: &[IdRange], holder: &[IdRange]) -> Option<Vec<IdRange>> {
    let mut out = Vec::new();
    for r in run {
        let (start, end) = (
            u64::from(r.outside),
            u64::from(r.outside) + u64::from(r.count),
        );
        let mut covered = 0u64;
        for h in holder {
            let (h_start, h_end) = (
                u64::from(h.outside),
                u64::from(h.outside) + u64::from(h.count),
            );
            let (a, b) = (start.max(h_start), end.min(h_end));
            if a >= b {
                continue;
            }
            out.push(IdRange {
                inside: (u64::from(r.inside) + (a - start)) as u32,
                outside: (u64::from(h.inside) + (a - h_start)) as u32,
                count: (b - a) as u32,
            });
            covered += b - a;
        }
        if covered != u64::from(r.count) {
            return None;
        }
    }
    out.sort_unstable_by_key(|r| r.inside);
    (out.len() <= MAX_LINES).then_some(out)
}

/// The text written to `/proc/PID/uid_map` or `gid_map`.
pub fn text(map: &[IdRange]) -> String {
    map.iter().map(|r| format!("{r}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(inside: u32, outside: u32, count: u32) -> IdRange {
        IdRange {
            inside,
            outside,
            count,
        }
    }

    #[test]
    fn parses_proc_maps() {
        let text = "         0       1000          1\n         1     100000      65536\n";
        assert_eq!(parse(text), Some(vec![r(0, 1000, 1), r(1, 100000, 65536)]));
        assert_eq!(parse("0 1 2 3\n"), None);
        assert_eq!(parse("0 x 1\n"), None);
        assert_eq!(parse(""), Some(vec![]));
    }

    #[test]
    fn normalizing_merges_contiguous_lines() {
        let cut = [r(1001, 101000, 64536), r(0, 1000, 1), r(1, 100000, 1000)];
        assert_eq!(normalize(&cut), [r(0, 1000, 1), r(1, 100000, 65536)]);
        let whole = [r(0, 100000, 1000), r(1000, 101000, 10)];
        assert_eq!(normalize(&whole), [r(0, 100000, 1010)]);
    }

    #[test]
    fn the_holder_maps_the_caller_at_zero_and_the_range_after() {
        // A run as uid 1000 inside: the range is cut around the caller's slot.
        let run = [r(1000, 1000, 1), r(0, 100000, 1000), r(1001, 101000, 64536)];
        assert_eq!(holder_map(&run, 1000), [r(0, 1000, 1), r(1, 100000, 65536)]);
        // A run as root inside gives the same holder.
        let root = [r(0, 1000, 1), r(1, 100000, 65536)];
        assert_eq!(holder_map(&root, 1000), holder_map(&run, 1000));
    }

    #[test]
    fn nesting_splits_lines_along_the_holders_extents() {
        let holder = [r(0, 1000, 1), r(1, 100000, 65536)];
        // Root inside: the design notes' `0 0 1` + `1 1 65535`... with the whole range.
        let run = [r(0, 1000, 1), r(1, 100000, 65536)];
        assert_eq!(nest(&run, &holder), Some(vec![r(0, 0, 1), r(1, 1, 65536)]));
        // The caller at 1000 inside.
        let run = [r(1000, 1000, 1), r(0, 100000, 1000), r(1001, 101000, 64536)];
        assert_eq!(
            nest(&run, &holder),
            Some(vec![r(0, 1, 1000), r(1000, 0, 1), r(1001, 1001, 64536)])
        );
        // One run line across two holder lines is cut in two.
        let holder = [r(0, 1000, 1), r(1, 100000, 10), r(11, 100010, 10)];
        let run = [r(5, 100005, 10)];
        assert_eq!(nest(&run, &holder), Some(vec![r(5, 6, 5), r(10, 11, 5)]));
    }

    #[test]
    fn nesting_refuses_ids_the_holder_lacks() {
        let holder = [r(0, 1000, 1), r(1, 100000, 100)];
        assert_eq!(nest(&[r(0, 100000, 101)], &holder), None);
        assert_eq!(nest(&[r(0, 2000, 1)], &holder), None);
    }

    #[test]
    fn map_text_is_one_line_each() {
        assert_eq!(text(&[r(0, 0, 1), r(1, 1, 65536)]), "0 0 1\n1 1 65536\n");
    }
}
