//! DEFLATE for stored JSON, shared by the stores: a run's JSON shrinks to a third or less.
//! DynamoDB bills a write per started KB of an item; the embedded store keeps each finished
//! run in a few hundred bytes on disk.

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The most bytes a stored value may inflate to: far above any run (a DynamoDB item is at
/// most 400 KB compressed), so only a corrupt value reaches it.
pub(crate) const INFLATED_MAX: u64 = 64 << 20;

/// How hard to compress. `fast` favours the writer's time (the embedded store compresses on
/// its hot path); `default` the bytes (DynamoDB bills them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "aws"), allow(dead_code))]
pub(crate) enum Effort {
    Fast,
    Default,
}

thread_local! {
    /// A compressor and a decompressor per thread, reset between uses: each holds tens of
    /// kilobytes of tables, and allocating (and zeroing) them for every run read or
    /// written was a few percent of the embedded store's CPU.
    static COMPRESS: RefCell<Option<(Effort, Compress)>> = const { RefCell::new(None) };
    static DECOMPRESS: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

fn level(effort: Effort) -> Compression {
    match effort {
        Effort::Fast => Compression::fast(),
        Effort::Default => Compression::default(),
    }
}

/// `bytes`, deflated.
pub(crate) fn deflate(bytes: &[u8], effort: Effort) -> std::io::Result<Vec<u8>> {
    COMPRESS.with(|cell| {
        let mut cell = cell.borrow_mut();
        let z = match &mut *cell {
            Some((e, z)) if *e == effort => {
                z.reset();
                z
            }
            slot => &mut slot.insert((effort, Compress::new(level(effort), false))).1,
        };
        let deflated = deflate_with(z, bytes);
        if deflated.is_err() {
            *cell = None;
        }
        deflated
    })
}

fn deflate_with(z: &mut Compress, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len() / 2 + 64);
    loop {
        let read = usize::try_from(z.total_in()).unwrap_or(usize::MAX);
        let rest = bytes.get(read..).unwrap_or_default();
        let status = z
            .compress_vec(rest, &mut out, FlushCompress::Finish)
            .map_err(std::io::Error::other)?;
        match status {
            Status::StreamEnd => return Ok(out),
            Status::Ok | Status::BufError => out.reserve(out.capacity().max(64)),
        }
    }
}

/// What [`deflate`] was given, or why `bytes` are not a deflated value (not DEFLATE,
/// cut short, or inflating past [`INFLATED_MAX`]).
pub(crate) fn inflate(bytes: &[u8]) -> Result<Vec<u8>, String> {
    DECOMPRESS.with(|cell| {
        let mut cell = cell.borrow_mut();
        let z = match &mut *cell {
            Some(z) => {
                z.reset(false);
                z
            }
            slot => slot.insert(Decompress::new(false)),
        };
        let inflated = inflate_with(z, bytes);
        if inflated.is_err() {
            // A decompressor that failed part-way is not trusted again: the next use gets
            // a fresh one.
            *cell = None;
        }
        inflated
    })
}

fn inflate_with(z: &mut Decompress, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(bytes.len() * 4 + 64);
    loop {
        let read = usize::try_from(z.total_in()).unwrap_or(usize::MAX);
        let rest = bytes.get(read..).unwrap_or_default();
        let before = (z.total_in(), z.total_out());
        let status = z
            // `None`, not `Finish`: `Finish` asks for the whole output in one call.
            .decompress_vec(rest, &mut out, FlushDecompress::None)
            .map_err(|e| e.to_string())?;
        if out.len() as u64 > INFLATED_MAX {
            return Err(format!("inflates past {INFLATED_MAX} bytes"));
        }
        let full = out.len() == out.capacity();
        match status {
            Status::StreamEnd => return Ok(out),
            _ if full => out.reserve(out.capacity().max(64)),
            _ if before == (z.total_in(), z.total_out()) => {
                return Err("the deflated value ends early".into());
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_json_when_deflated_then_it_inflates_back_and_is_smaller() {
        let json = serde_json::to_vec(&serde_json::json!({
            "steps": (0..20).map(|i| serde_json::json!({"id": format!("s{i}"), "tool": "calculator"})).collect::<Vec<_>>()
        }))
        .expect("json");
        for effort in [Effort::Fast, Effort::Default] {
            let z = deflate(&json, effort).expect("deflate");
            assert!(
                z.len() * 3 < json.len(),
                "{effort:?}: {} of {}",
                z.len(),
                json.len()
            );
            assert_eq!(inflate(&z), Ok(json.clone()));
        }
    }

    #[test]
    fn given_bytes_that_are_not_deflate_or_cut_short_when_inflated_then_it_says_so() {
        assert!(inflate(&[0xff; 16]).is_err());
        let z = deflate(&[7u8; 10_000], Effort::Fast).expect("deflate");
        assert!(inflate(&z[..z.len() / 2]).is_err(), "cut short");
        assert!(
            inflate(&z) == Ok(vec![7u8; 10_000]),
            "and the next use is clean"
        );
    }

    #[test]
    fn given_inputs_of_every_size_when_reused_then_each_round_trips() {
        // Incompressible bytes make the output outgrow its first guess.
        let mut x: u32 = 1;
        let noise: Vec<u8> = (0..300_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        for n in [0, 1, 100, 4_096, 65_537, 300_000] {
            for effort in [Effort::Default, Effort::Fast] {
                let z = deflate(&noise[..n], effort).expect("deflate");
                assert_eq!(inflate(&z).map(|v| v.len()), Ok(n), "{n} bytes, {effort:?}");
                assert!(
                    inflate(&z) == Ok(noise[..n].to_vec()),
                    "{n} bytes, {effort:?}"
                );
            }
        }
    }
}
