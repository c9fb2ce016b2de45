//! How an index directory is cut into *units* (one suffix array each), within a memory budget.
//!
//! A query costs about the same in a unit of any size (a binary search in RAM, then a page,
//! [`super::unit`]), so it costs the number of units, not the number of shards: small shards
//! are grouped into one unit, and a shard is cut into pieces only when it cannot be sorted
//! within the whole budget. The rules, for the shards still to build (in name order):
//!
//! - `max_unit = (memory - 64 MiB) / bytes_per_token`, at most 2^30 tokens: one unit may use
//!   the whole budget (a budget too small for the largest document is an error naming the
//!   minimum);
//! - a shard larger than `max_unit` is split into `ceil(n / max_unit)` pieces of about equal
//!   size, cut at document boundaries, unless it still fits whole: within the budget and the
//!   32-bit sort (tokens + documents < 2^31). `kdmem shard` ends a shard after the document
//!   that reaches `--shard-tokens` (2^30), so full shards are a little over 2^30 tokens and
//!   stay one unit;
//! - a shard of at least `small_shard` tokens (2^24) is its own unit;
//! - a run of consecutive smaller shards of the same token width and tokenizer is cut into
//!   `ceil(run tokens / max_group)` groups of about equal size, where
//!   `max_group = min(max_unit, max(min_group, ceil(small tokens to build / threads)))`
//!   (`min_group` = 2^27): many small shards become few units, yet every thread still gets a
//!   unit to sort once there is much to sort (libsais sorts one unit on one core).
//!
//! The build ([`super::dir::build_shards`]) then sorts units largest first on up to
//! [`Plan::concurrency`] threads, each unit taking [`Plan::unit_bytes`] of the budget before
//! it starts and giving them back when its file is written: peak build memory stays within
//! the budget, and when the budget is tight, fewer units are sorted at once rather than a
//! shard cut into pieces (a piece costs every later query one more lookup, while sorting with
//! fewer threads costs the build once). Planning is O(shards + documents of the shards to
//! split).

use crate::error::{Error, Result};

use super::build::{bytes_per_token, I32_LIMIT};

/// Memory not available to unit builds (interpreter, buffers, the pool's stacks).
pub const OVERHEAD: u64 = 64 << 20;

/// Which shards are grouped and how large groups grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grouping {
    /// Shards of fewer tokens than this are grouped (2^24 by default); larger ones are their
    /// own unit (or pieces).
    pub small_shard: u64,
    /// Groups grow to at least this many tokens (2^27 by default) before the thread count
    /// cuts them smaller: sorting that much on one core takes seconds, while every extra
    /// unit costs every query a lookup.
    pub min_group: u64,
}

impl Default for Grouping {
    fn default() -> Self {
        Grouping {
            small_shard: 1 << 24,
            min_group: 1 << 27,
        }
    }
}
/// Largest unit built (keeps positions in 4 bytes and the 32-bit libsais variants).
pub const MAX_UNIT: u64 = 1 << 30;

/// A memory budget in bytes and the threads allowed to use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Bytes for the whole build.
    pub memory: u64,
    /// Worker threads.
    pub threads: usize,
}

impl Budget {
    /// The default memory budget, the same as `kdmem shard`'s: three quarters of the
    /// machine's RAM or its cgroup limit ([`crate::memory::default_budget`]).
    pub fn machine_memory() -> u64 {
        crate::memory::default_budget()
    }
}

/// Size and layout facts of one shard, as the planner needs them.
#[derive(Debug, Clone, Copy)]
pub struct ShardStat<'a> {
    /// Tokens.
    pub n_tokens: u64,
    /// 2 or 4.
    pub token_width: u32,
    /// The `n_docs + 1` document offsets.
    pub offsets: &'a [u64],
    /// Shards group only with shards of the same key (token width and tokenizer).
    pub group_key: u64,
}

/// One unit to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitSpec {
    /// Position of the first covered shard.
    pub first_shard: usize,
    /// Shards covered (1 for a piece).
    pub n_shards: usize,
    /// Piece index (0 for whole shards).
    pub piece: u32,
    /// Pieces of the shard (1 for whole shards).
    pub pieces: u32,
    /// Tokens `[a, b)` of the piece in its shard (whole shards: `0..n` of the last shard).
    pub tokens: (u64, u64),
    /// Documents `[a, b)` of the piece in its shard.
    pub docs: (u64, u64),
    /// Tokens in the unit.
    pub n_tokens: u64,
}

impl UnitSpec {
    /// The unit's file name, from the stems of its shard files: `S.kdsa` (one shard),
    /// `S..T.kdsa` (shards S to T), `S.partNNN.kdsa` (piece NNN of shard S).
    pub fn file_name(&self, stems: &[String]) -> String {
        let first = &stems[self.first_shard];
        if self.pieces > 1 {
            format!("{first}.part{:03}.kdsa", self.piece)
        } else if self.n_shards == 1 {
            format!("{first}.kdsa")
        } else {
            format!(
                "{first}..{}.kdsa",
                stems[self.first_shard + self.n_shards - 1]
            )
        }
    }
}

/// What [`plan`] decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The units, in shard order.
    pub units: Vec<UnitSpec>,
    /// Most units sorted at once: the thread count, or fewer where the budget cannot hold
    /// that many of the smallest units (at least 1).
    pub concurrency: usize,
    /// Largest unit in tokens.
    pub max_unit: u64,
    /// Group size limit in tokens.
    pub max_group: u64,
    /// Bytes of the budget units may take (the budget less [`OVERHEAD`]).
    pub usable: u64,
    /// Build bytes per token of the widest unit ([`bytes_per_token`]).
    pub bytes_per_token: f64,
}

impl Plan {
    /// Bytes the build of `u` holds while it runs (at most [`Plan::usable`]).
    pub fn unit_bytes(&self, u: &UnitSpec) -> u64 {
        ((u.n_tokens as f64 * self.bytes_per_token).ceil() as u64).min(self.usable)
    }
}

fn too_small(memory: u64, need: u64, what: String) -> Error {
    Error::InvalidArgument {
        name: "memory".into(),
        value: format!("{memory} bytes"),
        fix: format!(
            "{what} needs at least {} to index; pass --memory {} or more",
            crate::memory::format_size(need),
            crate::memory::format_size_arg(need)
        ),
    }
}

/// Cut the shards at positions `todo` (ascending) of `shards` into units; see the module docs.
pub fn plan(
    shards: &[ShardStat<'_>],
    todo: &[usize],
    budget: Budget,
    grouping: Grouping,
) -> Result<Plan> {
    if budget.threads == 0 {
        return Err(Error::InvalidArgument {
            name: "threads".into(),
            value: "0".into(),
            fix: "pass a positive thread count".into(),
        });
    }
    let width = todo
        .iter()
        .map(|&k| shards[k].token_width)
        .max()
        .unwrap_or(2);
    let bpt = bytes_per_token(width, false);
    let (mut max_doc, mut max_doc_shard) = (0u64, 0usize);
    for &k in todo {
        let d = shards[k]
            .offsets
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or(0);
        if d > max_doc {
            (max_doc, max_doc_shard) = (d, k);
        }
    }
    let need_one = OVERHEAD + (max_doc.max(1) as f64 * bpt).ceil() as u64;
    if budget.memory < need_one {
        return Err(too_small(
            budget.memory,
            need_one,
            format!("the largest document ({max_doc} tokens, in shard number {max_doc_shard})"),
        ));
    }
    if max_doc > MAX_UNIT {
        return Err(Error::InvalidArgument {
            name: "document".into(),
            value: format!("{max_doc} tokens in shard number {max_doc_shard}"),
            fix: format!("kdmem indexes documents of at most {MAX_UNIT} tokens; split it"),
        });
    }
    let usable = budget.memory - OVERHEAD;
    let max_unit = ((usable as f64 / bpt) as u64)
        .min(MAX_UNIT)
        .max(max_doc)
        .max(1);
    let small = |k: usize| shards[k].n_tokens < grouping.small_shard;
    let small_total: u64 = todo
        .iter()
        .filter(|&&k| small(k))
        .map(|&k| shards[k].n_tokens)
        .sum();
    let max_group = max_unit
        .min(
            small_total
                .div_ceil(budget.threads as u64)
                .max(grouping.min_group),
        )
        .max(1);
    // Runs of consecutive small shards that may share a unit; large shards are split.
    let mut units = Vec::new();
    let mut run: Vec<usize> = Vec::new();
    let flush = |run: &mut Vec<usize>, units: &mut Vec<UnitSpec>| {
        if run.is_empty() {
            return;
        }
        let run_total: u64 = run.iter().map(|&k| shards[k].n_tokens).sum();
        let groups = run_total.div_ceil(max_group).max(1);
        // Group i ends at the shard boundary nearest to (i + 1) / groups of the run.
        let mut done = 0u64;
        let mut gi = 0u64;
        let mut g: Option<UnitSpec> = None;
        for &k in run.iter() {
            let n = shards[k].n_tokens;
            let docs = (0, (shards[k].offsets.len() - 1) as u64);
            let end = (run_total as u128 * u128::from(gi + 1) / u128::from(groups)) as u64;
            let closer = |u: &UnitSpec| {
                let (now, then) = (done + u.n_tokens, done + u.n_tokens + n);
                then.abs_diff(end) <= now.abs_diff(end)
            };
            match g.as_mut() {
                Some(u) if closer(u) && u.n_tokens + n <= max_unit => {
                    u.n_shards += 1;
                    u.n_tokens += n;
                    u.tokens = (0, n);
                    u.docs = docs;
                }
                _ => {
                    if let Some(u) = g.take() {
                        done += u.n_tokens;
                        gi += 1;
                        units.push(u);
                    }
                    g = Some(UnitSpec {
                        first_shard: k,
                        n_shards: 1,
                        piece: 0,
                        pieces: 1,
                        tokens: (0, n),
                        docs,
                        n_tokens: n,
                    });
                }
            }
        }
        units.extend(g);
        run.clear();
    };
    for &k in todo {
        let s = &shards[k];
        let joins = run.last().is_some_and(|&p| {
            p + 1 == k
                && shards[p].token_width == s.token_width
                && shards[p].group_key == s.group_key
        });
        if !joins || !small(k) {
            flush(&mut run, &mut units);
        }
        let docs = s.offsets.len() as u64 - 1;
        if !fits_whole(s.n_tokens, docs, max_unit, usable, bpt) {
            units.extend(split(k, s, max_unit));
        } else if small(k) {
            run.push(k);
        } else {
            run.push(k);
            flush(&mut run, &mut units);
        }
    }
    flush(&mut run, &mut units);
    let mut plan = Plan {
        units,
        concurrency: 1,
        max_unit,
        max_group,
        usable,
        bytes_per_token: bpt,
    };
    // As many threads as the smallest units fit in the budget at once.
    let mut costs: Vec<u64> = plan.units.iter().map(|u| plan.unit_bytes(u)).collect();
    costs.sort_unstable();
    let mut sum = 0u64;
    let fit = costs
        .iter()
        .take_while(|&&c| {
            sum += c;
            sum <= usable
        })
        .count();
    plan.concurrency = fit.min(budget.threads).max(1);
    Ok(plan)
}

/// Whether a shard of `n` tokens and `docs` documents is sorted as one unit: up to
/// `max_unit` tokens, or more while it fits the budget and the 32-bit sort.
fn fits_whole(n: u64, docs: u64, max_unit: u64, usable: u64, bpt: f64) -> bool {
    n <= max_unit || (n as f64 * bpt <= usable as f64 && n + docs < I32_LIMIT as u64)
}

/// Cut shard `k` into pieces of at most `max_unit` tokens at document boundaries, about
/// `ceil(n / max_unit)` of them of about equal size. Every document fits (checked by the
/// caller).
fn split(k: usize, s: &ShardStat<'_>, max_unit: u64) -> Vec<UnitSpec> {
    let n = s.n_tokens;
    let offs = s.offsets;
    let target = n.div_ceil(n.div_ceil(max_unit));
    let mut cuts = vec![0usize];
    let mut d = 0usize;
    let last = offs.len() - 1;
    while d < last {
        let start = offs[d];
        // First boundary at or past start + target, unless that piece would be too large.
        let mut e = offs.partition_point(|&o| o < start + target).min(last);
        if offs[e] - start > max_unit {
            e = offs.partition_point(|&o| o <= start + max_unit) - 1;
        }
        e = e.max(d + 1);
        // Keep trailing empty documents with the piece they follow.
        while e < last && offs[e + 1] == offs[e] {
            e += 1;
        }
        cuts.push(e);
        d = e;
    }
    if cuts.len() == 1 {
        cuts.push(last);
    }
    let pieces = (cuts.len() - 1) as u32;
    cuts.windows(2)
        .enumerate()
        .map(|(i, w)| UnitSpec {
            first_shard: k,
            n_shards: 1,
            piece: i as u32,
            pieces,
            tokens: (offs[w[0]], offs[w[1]]),
            docs: (w[0] as u64, w[1] as u64),
            n_tokens: offs[w[1]] - offs[w[0]],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(offsets: &[u64]) -> ShardStat<'_> {
        ShardStat {
            n_tokens: *offsets.last().unwrap(),
            token_width: 2,
            offsets,
            group_key: 0,
        }
    }

    fn mem(threads: usize) -> Budget {
        Budget {
            memory: 1 << 30,
            threads,
        }
    }

    fn g(small_shard: u64, min_group: u64) -> Grouping {
        Grouping {
            small_shard,
            min_group,
        }
    }

    fn got(p: &Plan) -> Vec<(usize, usize)> {
        p.units
            .iter()
            .map(|u| (u.first_shard, u.n_shards))
            .collect()
    }

    #[test]
    fn small_shards_are_grouped_and_large_ones_split() {
        let small: Vec<u64> = vec![0, 10, 20];
        let big: Vec<u64> = (0..=100).map(|i| i * 10).collect();
        let shards = vec![
            stat(&small),
            stat(&small),
            stat(&small),
            stat(&small),
            stat(&big),
        ];
        let all = [0, 1, 2, 3, 4];
        // Plenty of memory, one thread, every shard small: one unit for everything.
        let p = plan(&shards, &all, mem(1), g(1 << 20, 1)).unwrap();
        assert_eq!(got(&p), vec![(0, 5)]);
        assert_eq!(p.units[0].n_tokens, 1080);
        // The 1,000-token shard is not small: its own unit; the small ones grouped.
        let p = plan(&shards, &all, mem(1), g(100, 1)).unwrap();
        assert_eq!(got(&p), vec![(0, 4), (4, 1)]);
        // Two threads and no minimum group: the small shards in two groups of 40 tokens.
        let p = plan(&shards, &all, mem(2), g(100, 1)).unwrap();
        assert_eq!(p.max_group, 40);
        assert_eq!(got(&p), vec![(0, 2), (2, 2), (4, 1)]);
        // A minimum group size keeps them together.
        let p = plan(&shards, &all, mem(2), g(100, 1000)).unwrap();
        assert_eq!(got(&p), vec![(0, 4), (4, 1)]);
        // Non-consecutive positions are never grouped.
        let p = plan(&shards, &[0, 2], mem(1), Grouping::default()).unwrap();
        assert_eq!(got(&p), vec![(0, 1), (2, 1)]);
        // A budget that fits 300 tokens per unit: the 1,000-token shard becomes 4 pieces of
        // whole documents, each within the limit, covering the shard exactly.
        let budget = Budget {
            memory: OVERHEAD + (300.0 * bytes_per_token(2, false)) as u64,
            threads: 1,
        };
        let p = plan(&shards, &[4], budget, Grouping::default()).unwrap();
        assert_eq!(p.max_unit, 300);
        let pieces: Vec<&UnitSpec> = p.units.iter().collect();
        assert_eq!(pieces.len(), 4);
        assert_eq!(pieces[0].tokens.0, 0);
        assert_eq!(pieces[3].tokens.1, 1000);
        for w in pieces.windows(2) {
            assert_eq!(w[0].tokens.1, w[1].tokens.0);
            assert_eq!(w[0].docs.1, w[1].docs.0);
        }
        assert!(pieces.iter().all(|u| u.n_tokens <= 300 && u.pieces == 4));
    }

    #[test]
    fn runs_of_small_shards_become_one_unit_per_thread_of_about_equal_size() {
        let offs: Vec<u64> = (0..=10).map(|i| i * 10).collect();
        let shards = vec![stat(&offs); 64];
        let todo: Vec<usize> = (0..64).collect();
        for threads in [1, 2, 3, 5] {
            let p = plan(&shards, &todo, mem(threads), g(1000, 1)).unwrap();
            assert_eq!(p.units.len(), threads, "{threads}");
            let sizes: Vec<usize> = p.units.iter().map(|u| u.n_shards).collect();
            assert_eq!(sizes.iter().sum::<usize>(), 64);
            assert!(
                sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1,
                "{sizes:?}"
            );
        }
        // With the default minimum group, 6,400 tokens of small shards stay one unit.
        let p = plan(&shards, &todo, mem(8), Grouping::default()).unwrap();
        assert_eq!(got(&p), vec![(0, 64)]);
    }

    #[test]
    fn a_budget_too_small_for_one_document_names_the_minimum() {
        let offs: Vec<u64> = vec![0, 5000, 5001];
        let shards = vec![stat(&offs)];
        let budget = |memory| Budget { memory, threads: 4 };
        let e = plan(&shards, &[0], budget(OVERHEAD + 1000), Grouping::default()).unwrap_err();
        let msg = e.to_string();
        assert_eq!(e.kind(), "InvalidArgumentError");
        assert!(
            msg.contains("5000 tokens") && msg.contains("--memory"),
            "{msg}"
        );
        assert!(!msg.contains('\n'));
        // The suggested --memory parses as `kdmem shard`'s does and is enough.
        let arg = msg
            .split("--memory ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap();
        let suggested = crate::memory::parse_size(arg).unwrap();
        assert!(plan(&shards, &[0], budget(suggested), Grouping::default()).is_ok());
        // Enough for one document at a time: the plan drops to one unit built at once.
        let m = OVERHEAD + (5000.0 * bytes_per_token(2, false)) as u64;
        let p = plan(&shards, &[0], budget(m), Grouping::default()).unwrap();
        assert_eq!(p.concurrency, 1);
        assert_eq!(p.units.len(), 2);
    }

    #[test]
    fn a_tight_budget_sorts_fewer_units_at_once_rather_than_cutting_shards() {
        // Two shards of 1,000 tokens, 4 threads, a budget that holds one of them but not two:
        // each shard is one unit (no pieces), sorted one at a time.
        let offs: Vec<u64> = (0..=10).map(|i| i * 100).collect();
        let shards = vec![stat(&offs), stat(&offs)];
        let bpt = bytes_per_token(2, false);
        let budget = Budget {
            memory: OVERHEAD + (1500.0 * bpt) as u64,
            threads: 4,
        };
        let p = plan(&shards, &[0, 1], budget, g(10, 1)).unwrap();
        assert_eq!(got(&p), vec![(0, 1), (1, 1)]);
        assert!(p.units.iter().all(|u| u.pieces == 1));
        assert_eq!(p.concurrency, 1);
        assert!(p.unit_bytes(&p.units[0]) <= p.usable);
        // Room for both: two at once; for four: still two (two units).
        let budget = Budget {
            memory: OVERHEAD + (2000.0 * bpt).ceil() as u64 + 2,
            threads: 4,
        };
        assert_eq!(
            plan(&shards, &[0, 1], budget, g(10, 1))
                .unwrap()
                .concurrency,
            2
        );
        // Smaller than one shard: that shard alone is cut, into pieces that use the budget.
        let budget = Budget {
            memory: OVERHEAD + (600.0 * bpt) as u64,
            threads: 4,
        };
        let p = plan(&shards, &[0, 1], budget, g(10, 1)).unwrap();
        assert_eq!(p.units.len(), 4);
        assert!(p.units.iter().all(|u| u.pieces == 2 && u.n_tokens <= 600));
        assert_eq!(p.concurrency, 1);
    }

    #[test]
    fn a_full_shard_a_little_over_2_30_tokens_stays_one_unit_when_it_fits() {
        // kdmem shard ends a shard after the document reaching 2^30 tokens.
        let n = MAX_UNIT + 700;
        let offs: Vec<u64> = vec![0, MAX_UNIT - 300, n];
        let shards = vec![stat(&offs)];
        let bpt = bytes_per_token(2, false);
        let fits = Budget {
            memory: OVERHEAD + (n as f64 * bpt).ceil() as u64,
            threads: 2,
        };
        let p = plan(&shards, &[0], fits, Grouping::default()).unwrap();
        assert_eq!(got(&p), vec![(0, 1)]);
        assert_eq!((p.units[0].pieces, p.units[0].n_tokens), (1, n));
        assert!(p.unit_bytes(&p.units[0]) <= p.usable);
        // A budget that cannot hold it whole cuts it at its document boundary.
        let short = Budget {
            memory: fits.memory - 4096,
            threads: 2,
        };
        let p = plan(&shards, &[0], short, Grouping::default()).unwrap();
        assert_eq!(p.units.len(), 2);
        assert_eq!(p.units[0].tokens, (0, MAX_UNIT - 300));
        // Too many documents for the 32-bit sort (n + docs >= 2^31): cut, even with memory
        // to spare.
        let plenty = 64u64 << 30;
        assert!(fits_whole(n, 2, MAX_UNIT, plenty, bpt));
        assert!(!fits_whole(n, n, MAX_UNIT, plenty, bpt));
        assert!(fits_whole(MAX_UNIT, MAX_UNIT, MAX_UNIT, plenty, bpt));
    }
}
