//! The block map (`N.bmap`, format 2.0 as `bmaptool create` writes it) of the raw image: which
//! 4 KiB blocks hold data, with a SHA-256 per range, so `bmaptool copy` writes only those.
//!
//! Written here rather than by running `bmaptool create`: the same information comes from the
//! same `SEEK_DATA` map this module already walks, bmap-tools becomes optional for `BMAP=1`,
//! and the output is byte-for-byte the layout bmaptool writes (`bmaptool copy` accepts it;
//! tested).

use std::fs::File;
use std::io;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::sparse::{self, hex, Segment};

/// bmap block size: a page, as bmaptool picks on the usual file systems.
pub const BLOCK_SIZE: u64 = 4096;

/// The bmap text for the image at `path`.
pub fn create(path: &Path) -> io::Result<String> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    let blocks = size.div_ceil(BLOCK_SIZE);
    let ranges = mapped_ranges(&file, size)?;

    let mut map = String::new();
    let mut mapped = 0u64;
    for &(first, last) in &ranges {
        mapped += last - first + 1;
        let digest = range_sha256(
            &file,
            first * BLOCK_SIZE,
            ((last + 1) * BLOCK_SIZE).min(size),
        )?;
        let blocks = if first == last {
            first.to_string()
        } else {
            format!("{first}-{last}")
        };
        map.push_str(&format!(
            "        <Range chksum=\"{}\"> {blocks} </Range>\n",
            hex(&digest)
        ));
    }
    let percent = if blocks == 0 {
        0.0
    } else {
        mapped as f64 * 100.0 / blocks as f64
    };

    // Built the way bmaptool builds it: fields of unknown width are first written as spaces,
    // then overwritten in place once known (leaving any surplus spaces behind).
    let size_human = human_size(size);
    let mut out = format!(
        r#"<?xml version="1.0" ?>
<!-- This file contains the block map for an image file, which is basically
     a list of useful (mapped) block numbers in the image file. In other words,
     it lists only those blocks which contain data (boot sector, partition
     table, file-system metadata, files, directories, extents, etc). These
     blocks have to be copied to the target device. The other blocks do not
     contain any useful data and do not have to be copied to the target
     device.

     The block map an optimization which allows to copy or flash the image to
     the image quicker than copying of flashing the entire image. This is
     because with bmap less data is copied: <MappedBlocksCount> blocks instead
     of <BlocksCount> blocks.

     Besides the machine-readable data, this file contains useful commentaries
     which contain human-readable information like image size, percentage of
     mapped data, etc.

     The 'version' attribute is the block map file format version in the
     'major.minor' format. The version major number is increased whenever an
     incompatible block map format change is made. The minor number changes
     in case of minor backward-compatible changes. -->

<bmap version="2.0">
    <!-- Image size in bytes: {size_human} -->
    <ImageSize> {size} </ImageSize>

    <!-- Size of a block in bytes -->
    <BlockSize> {BLOCK_SIZE} </BlockSize>

    <!-- Count of blocks in the image file -->
    <BlocksCount> {blocks} </BlocksCount>

    <!-- Count of mapped blocks: "#
    )
    .into_bytes();
    let mapped_comment_at = out.len();
    out.extend_from_slice(
        format!(
            "{} or {}   -->\n",
            " ".repeat(size_human.len()),
            " ".repeat(6)
        )
        .as_bytes(),
    );
    out.extend_from_slice(b"    <MappedBlocksCount> ");
    let mapped_count_at = out.len();
    out.extend_from_slice(
        format!(
            "{} </MappedBlocksCount>\n\n",
            " ".repeat(blocks.to_string().len())
        )
        .as_bytes(),
    );
    out.extend_from_slice(
        concat!(
            "    <!-- Type of checksum used in this file -->\n",
            "    <ChecksumType> sha256 </ChecksumType>\n\n",
            "    <!-- The checksum of this bmap file. When it is calculated, the value of\n",
            "         the checksum has be zero (all ASCII \"0\" symbols).  -->\n",
            "    <BmapFileChecksum> "
        )
        .as_bytes(),
    );
    let checksum_at = out.len();
    out.extend_from_slice("0".repeat(64).as_bytes());
    out.extend_from_slice(
        concat!(
            " </BmapFileChecksum>\n\n",
            "    <!-- The block map which consists of elements which may either be a\n",
            "         range of blocks or a single block. The 'chksum' attribute\n",
            "         (if present) is the checksum of this blocks range. -->\n",
            "    <BlockMap>\n"
        )
        .as_bytes(),
    );
    out.extend_from_slice(map.as_bytes());
    out.extend_from_slice(b"    </BlockMap>\n</bmap>\n");
    overwrite(
        &mut out,
        mapped_comment_at,
        &format!("{} or {percent:.1}%", human_size(mapped * BLOCK_SIZE)),
    );
    overwrite(&mut out, mapped_count_at, &mapped.to_string());
    // The file's own checksum is taken with the field all zeros, then filled in.
    let own = hex(&Sha256::digest(&out));
    overwrite(&mut out, checksum_at, &own);
    Ok(String::from_utf8(out).expect("ASCII"))
}

/// Writes `text` over `out` from `at` on, as a seek + write on a file does.
fn overwrite(out: &mut Vec<u8>, at: usize, text: &str) {
    let end = at + text.len();
    if end > out.len() {
        out.resize(end, b' ');
    }
    out[at..end].copy_from_slice(text.as_bytes());
}

/// Inclusive block ranges holding data, adjacent ones merged.
fn mapped_ranges(file: &File, size: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    for segment in sparse::segments(file, 0, size)? {
        if let Segment::Data { start, end } = segment {
            let first = start / BLOCK_SIZE;
            let last = (end - 1) / BLOCK_SIZE;
            match ranges.last_mut() {
                Some((_, prev_last)) if *prev_last + 1 >= first => {
                    *prev_last = last.max(*prev_last)
                }
                _ => ranges.push((first, last)),
            }
        }
    }
    Ok(ranges)
}

fn range_sha256(file: &File, start: u64, end: u64) -> io::Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    sparse::walk(file, start, end, |_, piece| {
        sparse::piece_bytes(piece, |b| {
            hasher.update(b);
            Ok(())
        })
    })?;
    Ok(hasher.finalize().into())
}

/// bmaptool's `human_size`: `1 byte`, `N bytes` below 512, else one decimal in KiB…TiB.
fn human_size(size: u64) -> String {
    if size == 1 {
        return "1 byte".into();
    }
    if size < 512 {
        return format!("{size} bytes");
    }
    let mut value = size as f64;
    for unit in ["KiB", "MiB", "GiB", "TiB"] {
        value /= 1024.0;
        if value < 1024.0 {
            return format!("{value:.1} {unit}");
        }
    }
    format!("{value:.1} EiB")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes_as_bmaptool_prints_them() {
        assert_eq!(human_size(0), "0 bytes");
        assert_eq!(human_size(1), "1 byte");
        assert_eq!(human_size(511), "511 bytes");
        assert_eq!(human_size(512), "0.5 KiB");
        assert_eq!(human_size(4 << 20), "4.0 MiB");
        assert_eq!(human_size(3 << 30), "3.0 GiB");
    }
}
