//! Sparse files: where a file holds data (`SEEK_DATA` / `SEEK_HOLE`), reading a range with its
//! holes handed over as zeros without reading them, copying a range into a new sparse file, and
//! SHA-256 of a file the same way.
//!
//! Disk images are mostly holes (free space that was never written), so every pass over one
//! (compression, checksums, extraction, bmap) walks the data ranges and treats the holes as
//! zeros it never has to read.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use nix::errno::Errno;
use nix::unistd::{lseek, Whence};
use sha2::{Digest, Sha256};

/// Read size for data ranges.
pub const CHUNK: usize = 1 << 20;

/// Granularity of the zero-block test when copying: a page, the smallest block of the file
/// systems images are stored on.
pub const BLOCK: usize = 4096;

static ZEROS: [u8; CHUNK] = [0; CHUNK];

/// A stretch of a file: `Data` may hold anything (zeros too); a `Hole` reads as zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Segment {
    Data { start: u64, end: u64 },
    Hole { start: u64, end: u64 },
}

/// The data and holes of `[start, end)` in order. A file system without `SEEK_DATA` reports
/// everything as data.
pub fn segments(file: &File, start: u64, end: u64) -> io::Result<Vec<Segment>> {
    let fd = file.as_raw_fd();
    let mut out = Vec::new();
    let mut pos = start;
    while pos < end {
        let data = match lseek(fd, offset(pos)?, Whence::SeekData) {
            Ok(d) => (d as u64).min(end),
            // no data after pos
            Err(Errno::ENXIO) => end,
            Err(Errno::EINVAL) if out.is_empty() => {
                return Ok(vec![Segment::Data { start, end }]);
            }
            Err(e) => return Err(e.into()),
        };
        if data > pos {
            out.push(Segment::Hole {
                start: pos,
                end: data,
            });
        }
        if data >= end {
            break;
        }
        let hole = match lseek(fd, offset(data)?, Whence::SeekHole) {
            Ok(h) => (h as u64).min(end),
            Err(Errno::ENXIO) => end,
            Err(e) => return Err(e.into()),
        };
        // SEEK_HOLE always finds one (EOF at the latest); guard against a file that shrank.
        let hole = hole.max(data + 1).min(end);
        out.push(Segment::Data {
            start: data,
            end: hole,
        });
        pos = hole;
    }
    Ok(out)
}

fn offset(pos: u64) -> io::Result<i64> {
    i64::try_from(pos).map_err(|_| io::Error::other("offset beyond 2^63"))
}

/// One piece of a walk: bytes read from the file, or a run of zeros (a hole) not read.
pub enum Piece<'a> {
    Data(&'a [u8]),
    Zeros(u64),
}

/// Calls `f(position, piece)` for all of `[start, end)` in order, data in pieces of at most
/// [`CHUNK`] bytes, each hole as one `Zeros`.
pub fn walk(
    file: &File,
    start: u64,
    end: u64,
    mut f: impl FnMut(u64, Piece<'_>) -> io::Result<()>,
) -> io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    for segment in segments(file, start, end)? {
        match segment {
            Segment::Hole { start, end } => f(start, Piece::Zeros(end - start))?,
            Segment::Data { start, end } => {
                let mut pos = start;
                while pos < end {
                    let n = ((end - pos) as usize).min(CHUNK);
                    read_exact_at(file, &mut buf[..n], pos)?;
                    f(pos, Piece::Data(&buf[..n]))?;
                    pos += n as u64;
                }
            }
        }
    }
    Ok(())
}

fn read_exact_at(file: &File, buf: &mut [u8], pos: u64) -> io::Result<()> {
    file.read_exact_at(buf, pos).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            io::Error::new(e.kind(), format!("the file ended before byte {pos}"))
        } else {
            e
        }
    })
}

/// Hands `len` zero bytes to `f` in slices of at most [`CHUNK`] bytes.
pub fn zeros(mut len: u64, mut f: impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
    while len > 0 {
        let n = len.min(CHUNK as u64) as usize;
        f(&ZEROS[..n])?;
        len -= n as u64;
    }
    Ok(())
}

/// Feeds a whole piece (holes as zeros) to `f`.
pub fn piece_bytes(piece: Piece<'_>, mut f: impl FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
    match piece {
        Piece::Data(bytes) => f(bytes),
        Piece::Zeros(len) => zeros(len, f),
    }
}

/// Copies `[start, start + len)` of `src` into the new file `dst` (created, or truncated) as a
/// sparse file: holes of `src` and all-zero blocks of its data are not written. Returns the
/// SHA-256 of the copied bytes. The caller syncs `dst`.
pub fn copy_range(src: &File, start: u64, len: u64, dst: &File) -> io::Result<[u8; 32]> {
    dst.set_len(0)?;
    dst.set_len(len)?;
    let mut hasher = Sha256::new();
    walk(src, start, start + len, |pos, piece| match piece {
        Piece::Zeros(n) => zeros(n, |z| {
            hasher.update(z);
            Ok(())
        }),
        Piece::Data(bytes) => {
            hasher.update(bytes);
            write_nonzero(dst, pos - start, bytes)
        }
    })?;
    Ok(hasher.finalize().into())
}

/// Writes the runs of `bytes` that are not all-zero [`BLOCK`]s at `at` (relative to the
/// output's block grid).
pub fn write_nonzero(dst: &File, at: u64, bytes: &[u8]) -> io::Result<()> {
    let mut i = 0;
    let mut run_start: Option<usize> = None;
    while i < bytes.len() {
        // Blocks follow the output's alignment, so a hole in dst lines up with its blocks.
        let block_end = (((at as usize + i) / BLOCK + 1) * BLOCK - at as usize).min(bytes.len());
        let zero = is_zero(&bytes[i..block_end]);
        match (zero, run_start) {
            (false, None) => run_start = Some(i),
            (true, Some(s)) => {
                dst.write_all_at(&bytes[s..i], at + s as u64)?;
                run_start = None;
            }
            _ => {}
        }
        i = block_end;
    }
    if let Some(s) = run_start {
        dst.write_all_at(&bytes[s..], at + s as u64)?;
    }
    Ok(())
}

pub fn is_zero(bytes: &[u8]) -> bool {
    // 64 bytes at a time: the compiler vectorises the fold.
    let mut chunks = bytes.chunks_exact(64);
    chunks
        .by_ref()
        .all(|c| c.iter().fold(0u8, |acc, &b| acc | b) == 0)
        && chunks.remainder().iter().all(|&b| b == 0)
}

/// SHA-256 of a whole file, its holes hashed as zeros without reading them.
pub fn sha256_file(path: &Path) -> io::Result<[u8; 32]> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut hasher = Sha256::new();
    walk(&file, 0, len, |_, piece| {
        piece_bytes(piece, |b| {
            hasher.update(b);
            Ok(())
        })
    })?;
    Ok(hasher.finalize().into())
}

pub fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A file of `len` bytes with data written at the given (offset, byte, count) places.
    fn sparse_file(dir: &Path, len: u64, data: &[(u64, u8, usize)]) -> std::path::PathBuf {
        let path = dir.join("sparse");
        let f = File::create(&path).unwrap();
        f.set_len(len).unwrap();
        for &(at, byte, n) in data {
            f.write_all_at(&vec![byte; n], at).unwrap();
        }
        path
    }

    #[test]
    fn segments_cover_the_range_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mib = 1 << 20;
        let path = sparse_file(dir.path(), 8 * mib, &[(mib, 1, 4096), (5 * mib, 2, 8192)]);
        let f = File::open(&path).unwrap();
        let segs = segments(&f, 0, 8 * mib).unwrap();
        let mut pos = 0;
        let mut data = 0;
        for s in &segs {
            let (start, end) = match *s {
                Segment::Data { start, end } => {
                    data += end - start;
                    (start, end)
                }
                Segment::Hole { start, end } => (start, end),
            };
            assert_eq!(start, pos, "{segs:?}");
            assert!(end > start);
            pos = end;
        }
        assert_eq!(pos, 8 * mib);
        // tmpfs and ext4 both report holes; the data is at least what was written.
        assert!(data >= 4096 + 8192 && data < 8 * mib, "{segs:?}");
        // a sub-range
        let segs = segments(&f, mib + 100, mib + 200).unwrap();
        assert_eq!(
            segs,
            [Segment::Data {
                start: mib + 100,
                end: mib + 200
            }]
        );
    }

    #[test]
    fn copy_range_is_exact_and_sparse() {
        let dir = tempfile::tempdir().unwrap();
        let mib = 1 << 20;
        let path = sparse_file(
            dir.path(),
            6 * mib,
            &[
                (0, 7, 100),
                (mib + 4096 * 3, 9, 4096 * 2 + 17),
                (5 * mib, 0, 65536),
            ],
        );
        let src = File::open(&path).unwrap();
        let out_path = dir.path().join("out");
        let out = File::create(&out_path).unwrap();
        let digest = copy_range(&src, 4096, 5 * mib, &out).unwrap();
        drop(out);
        let all = std::fs::read(&path).unwrap();
        let want = &all[4096..4096 + 5 * mib as usize];
        assert_eq!(std::fs::read(&out_path).unwrap(), want);
        assert_eq!(digest, <[u8; 32]>::from(Sha256::digest(want)));
        use std::os::unix::fs::MetadataExt;
        let blocks = std::fs::metadata(&out_path).unwrap().blocks() * 512;
        assert!(
            blocks <= 64 * 1024,
            "the copy is not sparse: {blocks} bytes allocated"
        );
    }

    #[test]
    fn file_hash_matches_sha256sum_of_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = sparse_file(
            dir.path(),
            3 * CHUNK as u64 + 5,
            &[(CHUNK as u64 - 1, 3, 2)],
        );
        let want = Sha256::digest(std::fs::read(&path).unwrap());
        assert_eq!(hex(&sha256_file(&path).unwrap()), hex(&want));
        let mut f = File::create(dir.path().join("small")).unwrap();
        f.write_all(b"abc").unwrap();
        assert_eq!(
            hex(&sha256_file(&dir.path().join("small")).unwrap()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn zero_test() {
        let mut v = vec![0u8; 10_000];
        assert!(is_zero(&v));
        assert!(is_zero(&v[3..9_999]));
        v[9_998] = 1;
        assert!(!is_zero(&v[3..]));
        assert!(is_zero(&v[..9_998]));
        assert!(is_zero(&[]));
    }
}
