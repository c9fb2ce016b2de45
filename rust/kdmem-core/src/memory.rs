//! Memory budgets (`--memory 8GB`): parsing, the machine's default, and what a shard costs to
//! index, so `kdmem shard` can size shards that `kdmem index` will later build within it.
//!
//! The bytes-per-token figures are the suffix-array build's measured peak per shard built at
//! once (`docs/formats.md`, "Suffix-array index"): [`INDEX_BYTES_PER_TOKEN_U16`] and
//! [`INDEX_BYTES_PER_TOKEN_U32`]. They live here so the shard writer and the index builder
//! plan with the same numbers; change them together with the index build.

use crate::error::{Error, Result};
use crate::shard::format::Dtype;

/// Peak bytes per token of building one u16 unit's suffix array (libsais, 4-byte pointers;
/// `crate::index::build::bytes_per_token` uses the same figure).
pub const INDEX_BYTES_PER_TOKEN_U16: f64 = 6.5;
/// Peak bytes per token of building one u32 unit's suffix array.
pub const INDEX_BYTES_PER_TOKEN_U32: f64 = 8.5;
/// Fixed part of an index build besides the per-token arrays (process, buffers).
pub const INDEX_FIXED_BYTES: u64 = 64 << 20;

/// Peak bytes per token of indexing a shard of `dtype`.
pub fn index_bytes_per_token(dtype: Dtype) -> f64 {
    match dtype {
        Dtype::U16 => INDEX_BYTES_PER_TOKEN_U16,
        Dtype::U32 => INDEX_BYTES_PER_TOKEN_U32,
    }
}

/// Bytes needed to index one shard of `tokens` tokens of `dtype` (per shard built at once).
pub fn index_bytes(tokens: u64, dtype: Dtype) -> u64 {
    INDEX_FIXED_BYTES + (tokens as f64 * index_bytes_per_token(dtype)).ceil() as u64
}

/// Most tokens a shard may hold for its index build to fit in `budget` bytes (0 if none).
pub fn tokens_within(budget: u64, dtype: Dtype) -> u64 {
    let free = budget.saturating_sub(INDEX_FIXED_BYTES) as f64;
    (free / index_bytes_per_token(dtype)).floor() as u64
}

/// Parse a size: a number with an optional unit, `B`, `KB`/`MB`/`GB`/`TB` (powers of 1000),
/// `KiB`/`MiB`/`GiB`/`TiB` or `K`/`M`/`G`/`T` (powers of 1024), case-insensitive, e.g.
/// `8GB`, `512MiB`, `1.5T`, `1000000`.
pub fn parse_size(s: &str) -> Result<u64> {
    let bad = || Error::InvalidArgument {
        name: "memory".into(),
        value: s.into(),
        fix: "pass a size such as 8GB, 512MiB or 1.5T".into(),
    };
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let x: f64 = num.parse().map_err(|_| bad())?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024f64.powi(2),
        "g" | "gib" => 1024f64.powi(3),
        "t" | "tib" => 1024f64.powi(4),
        _ => return Err(bad()),
    };
    let v = x * mult;
    if !v.is_finite() || v < 1.0 || v > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(v as u64)
}

/// A size for messages, e.g. `6.87 GB` (powers of 1000, three significant digits).
pub fn format_size(bytes: u64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB", "PB"];
    let mut x = bytes as f64;
    let mut u = 0;
    while x >= 1000.0 && u + 1 < units.len() {
        x /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{x:.2} {}", units[u]).replacen(".00 ", " ", 1)
    }
}

/// A size to pass back as `--memory`: like [`format_size`] but rounded up (so it is never
/// below `bytes`) and without a space, e.g. `67.12MB`.
pub fn format_size_arg(bytes: u64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB", "PB"];
    let mut scale = 1u64;
    let mut u = 0;
    while bytes >= scale * 1000 && u + 1 < units.len() {
        scale *= 1000;
        u += 1;
    }
    if u == 0 {
        return format!("{bytes}B");
    }
    let hundredths = (bytes as u128 * 100).div_ceil(scale as u128);
    let (int, frac) = (hundredths / 100, hundredths % 100);
    let frac = match frac {
        0 => String::new(),
        f if f % 10 == 0 => format!(".{}", f / 10),
        f => format!(".{f:02}"),
    };
    format!("{int}{frac}{}", units[u])
}

/// Physical memory of this machine, or of its cgroup (container) limit when lower: `MemTotal`
/// of `/proc/meminfo` and `memory.max` (v2) / `memory.limit_in_bytes` (v1). `None` where
/// neither can be read (non-Linux).
pub fn machine_memory() -> Option<u64> {
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .map(|kib| kib * 1024)
    });
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .filter_map(|p| std::fs::read_to_string(p).ok()?.trim().parse::<u64>().ok())
    .min();
    match (total, cgroup) {
        (Some(t), Some(c)) => Some(t.min(c)),
        (t, c) => t.or(c),
    }
}

/// The default budget: three quarters of [`machine_memory`] (the rest is left to the OS and
/// the page cache), or 8 GiB where the machine's memory cannot be read.
pub fn default_budget() -> u64 {
    machine_memory().map_or(8 << 30, |m| m / 4 * 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_both_unit_systems() {
        assert_eq!(parse_size("8GB").unwrap(), 8_000_000_000);
        assert_eq!(parse_size("8gib").unwrap(), 8 << 30);
        assert_eq!(parse_size(" 512MiB ").unwrap(), 512 << 20);
        assert_eq!(parse_size("1.5T").unwrap(), 3 << 39);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        for bad in ["", "GB", "8 XB", "-1GB", "0", "1e99TB"] {
            let e = parse_size(bad).unwrap_err();
            assert!(e.to_string().contains("8GB"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn budgets_round_trip_through_tokens() {
        for dtype in [Dtype::U16, Dtype::U32] {
            for budget in [100 << 20, 8_000_000_000u64, 1 << 40] {
                let n = tokens_within(budget, dtype);
                assert!(index_bytes(n, dtype) <= budget);
                assert!(index_bytes(n + 1, dtype) > budget);
            }
            assert_eq!(tokens_within(INDEX_FIXED_BYTES, dtype), 0);
        }
        assert_eq!(format_size(6_870_000_000), "6.87 GB");
        assert_eq!(format_size(8_000_000_000), "8 GB");
        assert_eq!(format_size(12), "12 B");
        assert_eq!(format_size_arg(67_108_948), "67.11MB");
        assert_eq!(format_size_arg(8_000_000_000), "8GB");
        assert_eq!(format_size_arg(8_000_000_001), "8.01GB");
        assert_eq!(format_size_arg(1_500_000), "1.5MB");
        for b in [1u64, 999, 1000, 123_456_789, 9_999_999_999, 1 << 40] {
            assert!(parse_size(&format_size_arg(b)).unwrap() >= b, "{b}");
        }
    }

    #[test]
    fn the_machine_has_some_memory() {
        let m = machine_memory().expect("Linux test machines expose /proc/meminfo");
        assert!(m > 64 << 20);
        assert!(default_budget() <= m);
    }
}
