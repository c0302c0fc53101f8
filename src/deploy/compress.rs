//! Compressing the disk image per `DEPLOY_COMPRESSION`, in process: `zip` (one entry, deflate),
//! `gz` (flate2), `xz` (liblzma's multithreaded encoder through xz2) and `zstd` (libzstd with
//! worker threads). xz and zstd use every core; deflate has no multithreaded encoder in these
//! libraries (see `bench/compression.sh` for what that costs).
//!
//! In process rather than through the `zip`/`xz`/`gzip`/`zstd` programs: the same libraries, so
//! the same speed and output, but holes of the sparse image are fed as zeros without reading
//! them, the progress display gets exact byte counts, and a failure is an error value instead of
//! a parsed exit code. The archive formats are the standard ones: `unzip`, `xz -d`, `gzip -d`
//! and `zstd -d` read them (tested).

use std::fs::File;
use std::io::{self, BufWriter, Seek, Write};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};

use super::sparse;
use crate::config::Compression;

/// Output buffer in front of the file.
const OUT_BUFFER: usize = 1 << 20;

/// What one compression did.
#[derive(Clone, Debug)]
pub struct Compressed {
    pub input_bytes: u64,
    pub output_bytes: u64,
    pub output_sha256: [u8; 32],
    pub elapsed: Duration,
}

impl Compressed {
    /// Input bytes per second.
    pub fn rate(&self) -> f64 {
        self.input_bytes as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Output size as a fraction of the input.
    pub fn ratio(&self) -> f64 {
        self.output_bytes as f64 / (self.input_bytes.max(1)) as f64
    }
}

/// Worker threads for xz and zstd: every core this process may use.
pub fn threads() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

/// Whether `level` is allowed for `compression` (the same ranges the config validates).
pub fn check_level(compression: Compression, level: u32) -> anyhow::Result<()> {
    let levels = compression.levels();
    if compression != Compression::None && !levels.contains(&level) {
        bail!(
            "COMPRESSION_LEVEL={level} is not valid for DEPLOY_COMPRESSION={}: use {} to {}",
            compression.name(),
            levels.start(),
            levels.end()
        );
    }
    Ok(())
}

/// Compresses `src` into the new file `dst`. `entry` is the file name inside a zip archive.
/// `progress` gets the number of input bytes done so far.
pub fn compress(
    src: &Path,
    dst: &Path,
    compression: Compression,
    level: u32,
    entry: &str,
    progress: &mut dyn FnMut(u64),
) -> anyhow::Result<Compressed> {
    check_level(compression, level)?;
    let started = Instant::now();
    let input = File::open(src).with_context(|| format!("opening {}", src.display()))?;
    let meta = input.metadata()?;
    let len = meta.len();
    let out = File::create(dst).with_context(|| format!("creating {}", dst.display()))?;
    let mut encoder = Encoder::new(out, compression, level, entry, len, &meta)
        .with_context(|| format!("starting the {} compressor", compression.name()))?;
    let mut done = 0u64;
    sparse::walk(&input, 0, len, |_, piece| {
        sparse::piece_bytes(piece, |bytes| {
            encoder.write_all(bytes)?;
            done += bytes.len() as u64;
            progress(done);
            Ok(())
        })
    })
    .with_context(|| format!("compressing {} into {}", src.display(), dst.display()))?;
    let (file, digest) = encoder
        .finish()
        .with_context(|| format!("finishing {}", dst.display()))?;
    file.sync_all()
        .with_context(|| format!("writing {}", dst.display()))?;
    let output_bytes = file.metadata()?.len();
    drop(file);
    let output_sha256 = match digest {
        Some(d) => d,
        // zip seeks back to patch its headers, so its bytes are hashed once written.
        None => sparse::sha256_file(dst).with_context(|| format!("reading {}", dst.display()))?,
    };
    Ok(Compressed {
        input_bytes: len,
        output_bytes,
        output_sha256,
        elapsed: started.elapsed(),
    })
}

/// A writer that hashes what passes through it.
struct HashWriter {
    inner: BufWriter<File>,
    hasher: Sha256,
}

impl HashWriter {
    fn new(file: File) -> HashWriter {
        HashWriter {
            inner: BufWriter::with_capacity(OUT_BUFFER, file),
            hasher: Sha256::new(),
        }
    }

    fn finish(self) -> io::Result<(File, [u8; 32])> {
        let file = self.inner.into_inner().map_err(|e| e.into_error())?;
        Ok((file, self.hasher.finalize().into()))
    }
}

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

enum Encoder {
    Gz(flate2::write::GzEncoder<HashWriter>),
    Xz(xz2::write::XzEncoder<HashWriter>),
    Zstd(zstd::stream::write::Encoder<'static, HashWriter>),
    Zip(Box<zip::ZipWriter<BufWriter<File>>>),
}

impl Encoder {
    fn new(
        out: File,
        compression: Compression,
        level: u32,
        entry: &str,
        len: u64,
        meta: &std::fs::Metadata,
    ) -> io::Result<Encoder> {
        Ok(match compression {
            Compression::Gz => Encoder::Gz(flate2::write::GzEncoder::new(
                HashWriter::new(out),
                flate2::Compression::new(level),
            )),
            Compression::Xz => {
                let stream = xz2::stream::MtStreamBuilder::new()
                    .threads(threads())
                    .preset(level)
                    .check(xz2::stream::Check::Crc64)
                    .encoder()
                    .map_err(io::Error::other)?;
                Encoder::Xz(xz2::write::XzEncoder::new_stream(
                    HashWriter::new(out),
                    stream,
                ))
            }
            Compression::Zstd => {
                let mut enc =
                    zstd::stream::write::Encoder::new(HashWriter::new(out), level as i32)?;
                enc.multithread(threads())?;
                // As the zstd program writes it: checksum and content size in the frame.
                enc.include_checksum(true)?;
                enc.set_pledged_src_size(Some(len))?;
                enc.include_contentsize(true)?;
                Encoder::Zstd(enc)
            }
            Compression::Zip => {
                let mut zip = zip::ZipWriter::new(BufWriter::with_capacity(OUT_BUFFER, out));
                let method = if level == 0 {
                    zip::CompressionMethod::Stored
                } else {
                    zip::CompressionMethod::Deflated
                };
                let options = zip::write::SimpleFileOptions::default()
                    .compression_method(method)
                    .compression_level((level > 0).then_some(i64::from(level)))
                    .large_file(len >= u64::from(u32::MAX))
                    .unix_permissions(0o644)
                    .last_modified_time(zip_time(meta.modified().ok()));
                zip.start_file(entry, options).map_err(io::Error::other)?;
                Encoder::Zip(Box::new(zip))
            }
            Compression::None => return Err(io::Error::other("no compression requested")),
        })
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Encoder::Gz(e) => e.write_all(bytes),
            Encoder::Xz(e) => e.write_all(bytes),
            Encoder::Zstd(e) => e.write_all(bytes),
            Encoder::Zip(e) => e.write_all(bytes),
        }
    }

    /// The output file, and its SHA-256 when it was written front to back.
    fn finish(self) -> io::Result<(File, Option<[u8; 32]>)> {
        let (file, digest) = match self {
            Encoder::Gz(e) => e.finish()?.finish()?,
            Encoder::Xz(e) => e.finish()?.finish()?,
            Encoder::Zstd(e) => e.finish()?.finish()?,
            Encoder::Zip(z) => {
                let mut out = z.finish().map_err(io::Error::other)?;
                out.flush()?;
                let mut file = out.into_inner().map_err(|e| e.into_error())?;
                file.rewind()?;
                return Ok((file, None));
            }
        };
        Ok((file, Some(digest)))
    }
}

/// The zip entry's time stamp (UTC): the image's modification time, else now.
fn zip_time(modified: Option<SystemTime>) -> zip::DateTime {
    let secs = modified
        .unwrap_or_else(SystemTime::now)
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let t = secs % 86_400;
    zip::DateTime::from_date_and_time(
        year.clamp(1980, 2107) as u16,
        month as u8,
        day as u8,
        (t / 3600) as u8,
        (t / 60 % 60) as u8,
        (t % 60) as u8,
    )
    .unwrap_or_default()
}

/// (year, month, day) of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn levels_are_checked_per_format() {
        for (c, ok, bad) in [
            (Compression::Zip, [0, 9], [10, 19]),
            (Compression::Gz, [0, 9], [10, 100]),
            (Compression::Xz, [0, 9], [10, 19]),
            (Compression::Zstd, [1, 19], [0, 20]),
        ] {
            for l in ok {
                check_level(c, l).unwrap();
            }
            for l in bad {
                let err = check_level(c, l).unwrap_err().to_string();
                assert!(
                    err.starts_with(&format!("COMPRESSION_LEVEL={l} is not valid")),
                    "{err}"
                );
            }
        }
        check_level(Compression::None, 42).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("in");
        std::fs::write(&src, b"x").unwrap();
        let err = compress(
            &src,
            &dir.path().join("o"),
            Compression::Zstd,
            0,
            "in",
            &mut |_| {},
        )
        .unwrap_err();
        assert!(err.to_string().contains("use 1 to 19"), "{err}");
    }
}
