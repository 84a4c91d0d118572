use super::super::encode_png_strips;
use super::super::tests::picture_bytes as picture;
use super::*;
use proptest::prelude::*;
use rayon::prelude::*;

/// Cuts rows `0..height` into bands at the given cut points (sorted, deduplicated).
fn bands(height: usize, cuts: &[usize]) -> Vec<Range<usize>> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % height).filter(|&c| c > 0).collect();
    at.push(0);
    at.push(height);
    at.sort_unstable();
    at.dedup();
    at.windows(2).map(|w| w[0]..w[1]).collect()
}

/// The file of `data` with its bands handed in in `order` (indices into the bands), one
/// at a time or all at once on the rayon pool.
fn streamed(
    data: &[u8],
    rows: PngRows,
    strip_bytes: usize,
    bands: &[Range<usize>],
    order: &[usize],
    parallel: bool,
) -> Result<Vec<u8>, CodecError> {
    let stride = rows.stride();
    let mut out = Vec::new();
    let stream = PngStream::new(&mut out, rows, strip_bytes)?;
    let put = |&b: &usize| {
        let r = &bands[b];
        stream.put(r.start, &data[r.start * stride..r.end * stride])
    };
    if parallel {
        order.par_iter().try_for_each(put)?;
    } else {
        order.iter().try_for_each(put)?;
    }
    stream.finish()?;
    Ok(out)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Any bands, in any order, serial or parallel, give the whole-picture writer's file
    /// byte for byte: every layout, both depths, strips of one row to the whole picture.
    #[test]
    fn rows_in_any_order_give_the_whole_pictures_file(
        width in 1u32..40,
        height in 1u32..70,
        channels in 1u8..5,
        sixteen in any::<bool>(),
        strip_bytes in 1usize..2000,
        cuts in proptest::collection::vec(0usize..100, 0..12),
        shuffle in any::<u64>(),
        parallel in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let rows = PngRows { width, height, channels, bits: if sixteen { 16 } else { 8 } };
        let data = picture(rows.stride() * height as usize, seed);
        let whole = encode_png_strips(&data, rows, strip_bytes).unwrap();
        let bands = bands(height as usize, &cuts);
        let mut order: Vec<usize> = (0..bands.len()).collect();
        let mut s = shuffle | 1;
        for i in (1..order.len()).rev() {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            order.swap(i, (s % (i as u64 + 1)) as usize);
        }
        let got = streamed(&data, rows, strip_bytes, &bands, &order, parallel).unwrap();
        prop_assert!(got == whole, "bands {:?} in order {:?}", bands, order);
    }
}

#[test]
fn a_one_row_picture_is_the_whole_pictures_file() {
    for bits in [8, 16] {
        let rows = PngRows {
            width: 9,
            height: 1,
            channels: 3,
            bits,
        };
        let data = picture(rows.stride(), 3);
        let whole = encode_png_strips(&data, rows, 1).unwrap();
        assert_eq!(
            streamed(&data, rows, 1, &bands(1, &[]), &[0], false).unwrap(),
            whole
        );
    }
}

#[test]
fn a_picture_missing_rows_is_refused_and_nothing_waits_for_them() {
    let rows = PngRows {
        width: 5,
        height: 10,
        channels: 1,
        bits: 8,
    };
    let data = picture(50, 4);
    // Rows 4..7 never come (a failed band): the strips after them are compressed as far as
    // they can be, and the file is refused, not left waiting.
    let bands = [0..4, 4..7, 7..10];
    let err = streamed(&data, rows, 10, &bands, &[2, 0], true).unwrap_err();
    assert!(err.to_string().contains("strips written"), "{err}");
}

#[test]
fn rows_handed_in_twice_or_outside_the_picture_are_refused() {
    let rows = PngRows {
        width: 4,
        height: 6,
        channels: 1,
        bits: 8,
    };
    let data = picture(24, 5);
    let mut out = Vec::new();
    let stream = PngStream::new(&mut out, rows, 8).unwrap();
    stream.put(0, &data[..8]).unwrap();
    assert!(stream.put(0, &data[..8]).is_err());
    assert!(stream.put(5, &data[..8]).is_err());
    assert!(stream.put(2, &data[..5]).is_err());
}
