//! `pigen internal bench-compression IMAGE`: throughput and ratio of each deploy compression on
//! one image, measured in one run with the code the deploy uses (`bench/compression.sh` makes
//! a realistic image and calls this).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use super::{compress, sparse, threads};
use crate::config::Compression;
use crate::exec::buildlog::{BuildLog, Verbosity};

/// One measured format.
#[derive(Clone, Debug)]
pub struct BenchRow {
    pub compression: Compression,
    pub level: u32,
    pub result: super::Compressed,
}

/// Compresses `image` with each of `formats` at `level` (zstd's lowest is 1) into `out_dir`,
/// deleting each output after measuring it. Progress goes to the terminal when there is one.
pub fn bench_compression(
    image: &Path,
    formats: &[Compression],
    level: u32,
    out_dir: &Path,
    quiet: bool,
) -> anyhow::Result<Vec<BenchRow>> {
    let len = std::fs::metadata(image)
        .with_context(|| format!("reading {}", image.display()))?
        .len();
    let log = BuildLog::open(
        Path::new("/dev/null"),
        if quiet {
            Verbosity::Quiet
        } else {
            Verbosity::Normal
        },
    )?;
    let mut rows = Vec::new();
    for &compression in formats {
        let level = level.clamp(*compression.levels().start(), *compression.levels().end());
        let out = out_dir.join(format!(
            ".pigen-bench-{}.{}",
            std::process::id(),
            compression.name()
        ));
        let result = {
            let progress = log.bytes(&format!("{} {level}", compression.name()), len);
            compress(image, &out, compression, level, "image.img", &mut |d| {
                progress.set(d)
            })
        };
        let _ = std::fs::remove_file(&out);
        rows.push(BenchRow {
            compression,
            level,
            result: result?,
        });
    }
    log.finish();
    Ok(rows)
}

/// Data bytes of the image (what is not a hole).
pub fn data_bytes(image: &Path) -> anyhow::Result<u64> {
    let file = std::fs::File::open(image)?;
    let len = file.metadata()?.len();
    Ok(sparse::segments(&file, 0, len)?
        .iter()
        .map(|s| match *s {
            sparse::Segment::Data { start, end } => end - start,
            sparse::Segment::Hole { .. } => 0,
        })
        .sum())
}

/// The report: one header line about the image, then a table (MB = 10^6 bytes; rates are
/// image bytes per second of wall time).
pub fn report(image: &Path, rows: &[BenchRow]) -> anyhow::Result<String> {
    let len = std::fs::metadata(image)?.len();
    let data = data_bytes(image)?;
    let mb = |b: u64| b as f64 / 1e6;
    let mut out = String::new();
    writeln!(
        out,
        "image {}: {:.1} MB, {:.1} MB of it data; {} threads for xz and zstd",
        image.display(),
        mb(len),
        mb(data),
        threads()
    )?;
    writeln!(
        out,
        "{:<6} {:>5} {:>9} {:>9} {:>12} {:>11} {:>7}",
        "format", "level", "seconds", "MB/s", "data MB/s", "output MB", "ratio"
    )?;
    for row in rows {
        let secs = row.result.elapsed.as_secs_f64().max(1e-9);
        writeln!(
            out,
            "{:<6} {:>5} {:>9.2} {:>9.1} {:>12.1} {:>11.1} {:>6.1}%",
            row.compression.name(),
            row.level,
            secs,
            mb(len) / secs,
            mb(data) / secs,
            mb(row.result.output_bytes),
            row.result.ratio() * 100.0
        )?;
    }
    Ok(out)
}
