//! How an index directory is cut into *units* (one suffix array each), within a memory budget.
//!
//! A query costs about the same in a unit of any size (a binary search in RAM, then a page,
//! [`super::unit`]), so it costs the number of units, not the number of shards: small shards
//! are grouped into one unit, and a shard too large to sort within the budget is cut into
//! document-aligned pieces. The rules, for the shards still to build (in name order):
//!
//! - `max_unit = (memory - 64 MiB) / (concurrency * bytes_per_token)`, at most 2^30 tokens,
//!   where `concurrency` starts at the thread count and drops until the largest document fits
//!   in one unit (a budget too small for one document even alone is an error naming the
//!   minimum);
//! - a shard larger than `max_unit` is split into `ceil(n / max_unit)` pieces of about equal
//!   size, cut at document boundaries;
//! - consecutive shards of the same token width are grouped while the group stays within
//!   `min(max_unit, ceil(tokens to build / concurrency))` tokens, so that every thread still
//!   gets a unit to sort (libsais sorts one unit on one core).
//!
//! So peak build memory stays within the budget: at most `concurrency` units are sorted at
//! once, each within `max_unit * bytes_per_token`. Planning is O(shards + documents of the
//! shards to split).

use crate::error::{Error, Result};

use super::build::bytes_per_token;

/// Memory not available to unit builds (interpreter, buffers, the pool's stacks).
pub const OVERHEAD: u64 = 64 << 20;
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
    /// The default memory budget: three quarters of the machine's RAM (`MemTotal` of
    /// `/proc/meminfo`), or 8 GiB where that cannot be read.
    pub fn machine_memory() -> u64 {
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|s| {
                let line = s.lines().find(|l| l.starts_with("MemTotal:"))?;
                let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
                Some(kb * 1024 / 4 * 3)
            })
            .unwrap_or(8 << 30)
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
    /// Units sorted at once.
    pub concurrency: usize,
    /// Largest unit in tokens.
    pub max_unit: u64,
    /// Group size limit in tokens.
    pub max_group: u64,
}

fn too_small(memory: u64, need: u64, what: String) -> Error {
    Error::InvalidArgument {
        name: "memory".into(),
        value: format!("{memory} bytes"),
        fix: format!(
            "{what} needs at least {need} bytes ({:.2} GiB) to index; pass --memory {}MB or more",
            need as f64 / (1u64 << 30) as f64,
            need.div_ceil(1 << 20)
        ),
    }
}

/// Cut the shards at positions `todo` (ascending) of `shards` into units; see the module docs.
pub fn plan(shards: &[ShardStat<'_>], todo: &[usize], budget: Budget) -> Result<Plan> {
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
    let usable = (budget.memory - OVERHEAD) as f64;
    let mut concurrency = budget.threads;
    let max_unit = loop {
        let u = ((usable / (concurrency as f64 * bpt)) as u64).min(MAX_UNIT);
        if u >= max_doc.max(1) || concurrency == 1 {
            break u.max(max_doc).max(1);
        }
        concurrency -= 1;
    };
    let total: u64 = todo.iter().map(|&k| shards[k].n_tokens).sum();
    let max_group = max_unit.min(total.div_ceil(concurrency as u64).max(1));
    let mut units = Vec::new();
    let mut group: Option<UnitSpec> = None;
    let mut prev: Option<usize> = None;
    for &k in todo {
        let s = &shards[k];
        let n = s.n_tokens;
        let joins = match (&group, prev) {
            (Some(g), Some(p)) => {
                p + 1 == k
                    && shards[g.first_shard].token_width == s.token_width
                    && shards[g.first_shard].group_key == s.group_key
                    && g.n_tokens + n <= max_group
            }
            _ => false,
        };
        if joins {
            let g = group.as_mut().expect("joins implies a group");
            g.n_shards += 1;
            g.n_tokens += n;
            g.tokens = (0, n);
            g.docs = (0, (s.offsets.len() - 1) as u64);
        } else {
            units.extend(group.take());
            if n > max_unit {
                units.extend(split(k, s, max_unit));
            } else {
                group = Some(UnitSpec {
                    first_shard: k,
                    n_shards: 1,
                    piece: 0,
                    pieces: 1,
                    tokens: (0, n),
                    docs: (0, (s.offsets.len() - 1) as u64),
                    n_tokens: n,
                });
            }
        }
        prev = Some(k);
    }
    units.extend(group);
    Ok(Plan {
        units,
        concurrency,
        max_unit,
        max_group,
    })
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

    #[test]
    fn small_shards_are_grouped_per_thread_and_large_ones_split() {
        let small: Vec<u64> = vec![0, 10, 20];
        let big: Vec<u64> = (0..=100).map(|i| i * 10).collect();
        let shards = vec![
            stat(&small),
            stat(&small),
            stat(&small),
            stat(&small),
            stat(&big),
        ];
        // Plenty of memory, one thread: one unit for everything.
        let p = plan(
            &shards,
            &[0, 1, 2, 3, 4],
            Budget {
                memory: 1 << 30,
                threads: 1,
            },
        )
        .unwrap();
        assert_eq!(p.units.len(), 1, "{p:?}");
        assert_eq!((p.units[0].n_shards, p.units[0].n_tokens), (5, 1080));
        // Two threads: groups of at most half the tokens; the big shard alone.
        let p = plan(
            &shards,
            &[0, 1, 2, 3, 4],
            Budget {
                memory: 1 << 30,
                threads: 2,
            },
        )
        .unwrap();
        assert_eq!(p.max_group, 540);
        let got: Vec<(usize, usize)> = p
            .units
            .iter()
            .map(|u| (u.first_shard, u.n_shards))
            .collect();
        assert_eq!(got, vec![(0, 4), (4, 1)]);
        // A budget that fits 300 tokens per unit: the 1,000-token shard becomes 4 pieces of
        // whole documents, each within the limit, covering the shard exactly.
        let mem = OVERHEAD + (300.0 * bytes_per_token(2, false)) as u64;
        let p = plan(
            &shards,
            &[4],
            Budget {
                memory: mem,
                threads: 1,
            },
        )
        .unwrap();
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
        // Non-consecutive positions are never grouped.
        let p = plan(
            &shards,
            &[0, 2],
            Budget {
                memory: 1 << 30,
                threads: 1,
            },
        )
        .unwrap();
        assert_eq!(p.units.len(), 2);
    }

    #[test]
    fn a_budget_too_small_for_one_document_names_the_minimum() {
        let offs: Vec<u64> = vec![0, 5000, 5001];
        let shards = vec![stat(&offs)];
        let e = plan(
            &shards,
            &[0],
            Budget {
                memory: OVERHEAD + 1000,
                threads: 4,
            },
        )
        .unwrap_err();
        let msg = e.to_string();
        assert_eq!(e.kind(), "InvalidArgumentError");
        assert!(
            msg.contains("5000 tokens") && msg.contains("--memory"),
            "{msg}"
        );
        assert!(!msg.contains('\n'));
        // Enough for one document at a time: the plan drops to one unit built at once.
        let mem = OVERHEAD + (5000.0 * bytes_per_token(2, false)) as u64;
        let p = plan(
            &shards,
            &[0],
            Budget {
                memory: mem,
                threads: 4,
            },
        )
        .unwrap();
        assert_eq!(p.concurrency, 1);
        assert_eq!(p.units.len(), 2);
    }
}
