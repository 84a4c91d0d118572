use super::*;
use proptest::prelude::*;

/// A `.npy` file with the given version, raw header text and data bytes.
fn file(major: u8, header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&[major, 0]);
    if major == 1 {
        out.extend_from_slice(&u16::try_from(header.len()).unwrap().to_le_bytes());
    } else {
        out.extend_from_slice(&u32::try_from(header.len()).unwrap().to_le_bytes());
    }
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn header(descr: &str, fortran: bool, shape: &str) -> String {
    let f = if fortran { "True" } else { "False" };
    format!("{{'descr': '{descr}', 'fortran_order': {f}, 'shape': {shape}, }}          \n")
}

fn simple(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
    file(1, &header(descr, false, shape), data)
}

fn bytes_of<const N: usize>(items: impl IntoIterator<Item = [u8; N]>) -> Vec<u8> {
    items.into_iter().flatten().collect()
}

fn malformed(bytes: &[u8]) -> String {
    match read_npy(bytes, 1_000_000) {
        Err(NpyError::Malformed(m)) => m,
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[test]
fn written_files_round_trip_for_several_shapes() {
    let cases: [(&[usize], Vec<f32>); 5] = [
        (
            &[2, 3],
            vec![0.0, 1.5, -2.0, 3.25, f32::MAX, f32::MIN_POSITIVE],
        ),
        (&[4], vec![1.0, 2.0, 3.0, 4.0]),
        (&[], vec![42.0]),
        (&[0, 3], vec![]),
        (&[1, 2, 1, 2], vec![9.0, 8.0, 7.0, 6.0]),
    ];
    for (shape, data) in cases {
        let bytes = write_npy_f32(shape, &data);
        let (s, d) = read_npy(&bytes, 100).unwrap();
        assert_eq!((s.as_slice(), d), (shape, data));
    }
}

#[test]
fn written_files_have_a_numpy_style_v1_header_aligned_to_64_bytes() {
    let bytes = write_npy_f32(&[2, 3], &[0.0; 6]);
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let len = usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
    assert_eq!((10 + len) % 64, 0);
    let text = std::str::from_utf8(&bytes[10..10 + len]).unwrap();
    assert!(text.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"));
    assert!(text.ends_with(" \n"));
    assert_eq!(bytes.len(), 10 + len + 24);
    let one_d = write_npy_f32(&[5], &[0.0; 5]);
    assert!(std::str::from_utf8(&one_d[10..80])
        .unwrap()
        .contains("'shape': (5,), }"));
}

#[test]
fn writer_switches_to_v2_when_the_header_exceeds_65535_bytes() {
    let shape = vec![1_usize; 30_000];
    let bytes = write_npy_f32(&shape, &[7.0]);
    assert_eq!(&bytes[6..8], &[2, 0]);
    let len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    assert_eq!((12 + len) % 64, 0);
    assert_eq!(&bytes[12 + len..], &7.0_f32.to_le_bytes());
}

#[test]
#[should_panic(expected = "does not match data length")]
fn writer_panics_when_shape_and_data_disagree() {
    let _ = write_npy_f32(&[2, 2], &[1.0]);
}

#[test]
fn every_supported_dtype_is_converted_to_f32() {
    let half = |h: u16| h.to_le_bytes();
    let cases: Vec<(&str, Vec<u8>, Vec<f32>)> = vec![
        (
            "<f4",
            bytes_of([1.5_f32.to_le_bytes(), (-2.0_f32).to_le_bytes()]),
            vec![1.5, -2.0],
        ),
        (
            ">f4",
            bytes_of([1.5_f32.to_be_bytes(), (-2.0_f32).to_be_bytes()]),
            vec![1.5, -2.0],
        ),
        (
            "<f8",
            bytes_of([0.1_f64.to_le_bytes(), 1e30_f64.to_le_bytes()]),
            vec![0.1, 1e30],
        ),
        (
            ">f8",
            bytes_of([(-3.0_f64).to_be_bytes(), 1e-50_f64.to_be_bytes()]),
            vec![-3.0, 0.0],
        ),
        (
            "<f2",
            bytes_of([
                half(0x3c00),
                half(0xc000),
                half(0x7bff),
                half(0x0001),
                half(0x8000),
            ]),
            vec![1.0, -2.0, 65504.0, 2.0_f32.powi(-24), -0.0],
        ),
        (
            ">f2",
            bytes_of([0x3555_u16.to_be_bytes()]),
            vec![0.333_251_95],
        ),
        ("|i1", vec![0x80, 0x7f, 0xff], vec![-128.0, 127.0, -1.0]),
        (
            "<i2",
            bytes_of([(-300_i16).to_le_bytes(), 300_i16.to_le_bytes()]),
            vec![-300.0, 300.0],
        ),
        (">i2", bytes_of([(-300_i16).to_be_bytes()]), vec![-300.0]),
        (
            "<i4",
            bytes_of([(-70_000_i32).to_le_bytes()]),
            vec![-70_000.0],
        ),
        (">i4", bytes_of([70_000_i32.to_be_bytes()]), vec![70_000.0]),
        (
            "<i8",
            bytes_of([(-5_i64).to_le_bytes(), (1_i64 << 40).to_le_bytes()]),
            vec![-5.0, 1_099_511_627_776.0],
        ),
        (">i8", bytes_of([(-5_i64).to_be_bytes()]), vec![-5.0]),
        ("|u1", vec![0, 255], vec![0.0, 255.0]),
        ("<u2", bytes_of([65_535_u16.to_le_bytes()]), vec![65_535.0]),
        (">u2", bytes_of([258_u16.to_be_bytes()]), vec![258.0]),
        (
            "<u4",
            bytes_of([4_000_000_000_u32.to_le_bytes()]),
            vec![4e9],
        ),
        (">u4", bytes_of([16_u32.to_be_bytes()]), vec![16.0]),
        (
            "<u8",
            bytes_of([(1_u64 << 60).to_le_bytes()]),
            vec![1_152_921_504_606_846_976.0],
        ),
        (">u8", bytes_of([3_u64.to_be_bytes()]), vec![3.0]),
        ("|b1", vec![0, 1, 2], vec![0.0, 1.0, 1.0]),
        ("=f4", bytes_of([2.0_f32.to_le_bytes()]), vec![2.0]),
        ("<i1", vec![0xfe], vec![-2.0]),
    ];
    for (descr, data, expected) in cases {
        let bytes = simple(descr, &format!("({},)", expected.len()), &data);
        let (shape, values) = read_npy(&bytes, 100).unwrap_or_else(|e| panic!("{descr}: {e}"));
        assert_eq!(shape, [expected.len()], "{descr}");
        assert_eq!(values, expected, "{descr}");
    }
}

#[test]
fn fortran_order_data_is_transposed_into_c_order() {
    // C-order array [[0,1,2],[3,4,5]] stored column-major: 0,3,1,4,2,5.
    let data = bytes_of([0_i16, 3, 1, 4, 2, 5].map(i16::to_le_bytes));
    let bytes = file(1, &header("<i2", true, "(2, 3)"), &data);
    let (shape, values) = read_npy(&bytes, 100).unwrap();
    assert_eq!(shape, [2, 3]);
    assert_eq!(values, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);

    // 2×3×4 with value = C-order flat index, stored Fortran order.
    let (d0, d1, d2) = (2, 3, 4);
    let mut stored = Vec::new();
    for k in 0..d2 {
        for j in 0..d1 {
            for i in 0..d0 {
                stored.push(u8::try_from(i * d1 * d2 + j * d2 + k).unwrap());
            }
        }
    }
    let bytes = file(1, &header("|u1", true, "(2, 3, 4)"), &stored);
    let (shape, values) = read_npy(&bytes, 100).unwrap();
    assert_eq!(shape, [2, 3, 4]);
    assert_eq!(values, (0..24).map(|v| v as f32).collect::<Vec<_>>());
}

#[test]
fn scalar_and_zero_sized_arrays_are_read() {
    let bytes = simple("<f8", "()", &2.5_f64.to_le_bytes());
    assert_eq!(read_npy(&bytes, 1).unwrap(), (vec![], vec![2.5]));
    let bytes = simple("<f4", "(0, 3)", &[]);
    assert_eq!(read_npy(&bytes, 3).unwrap(), (vec![0, 3], vec![]));
    let bytes = file(1, &header("<f4", true, "(3, 0, 2)"), &[]);
    assert_eq!(read_npy(&bytes, 10).unwrap(), (vec![3, 0, 2], vec![]));
}

#[test]
fn v2_and_v3_headers_and_python2_style_dimensions_are_accepted() {
    let data = bytes_of([1.0_f32, 2.0].map(f32::to_le_bytes));
    for major in [2, 3] {
        let bytes = file(major, &header("<f4", false, "(1, 2)"), &data);
        assert_eq!(read_npy(&bytes, 10).unwrap(), (vec![1, 2], vec![1.0, 2.0]));
    }
    let text = "{\"shape\":(2L,),\"fortran_order\":False,\"descr\":\"<f4\"}\n";
    assert_eq!(
        read_npy(&file(1, text, &data), 10).unwrap(),
        (vec![2], vec![1.0, 2.0])
    );
}

#[test]
fn data_length_must_match_the_shape_exactly() {
    let data = bytes_of([1.0_f32, 2.0, 3.0].map(f32::to_le_bytes));
    let m = malformed(&simple("<f4", "(2, 2)", &data));
    assert!(m.contains("has 12 bytes, expected 16"), "{m}");
    let mut long = data.clone();
    long.push(0);
    let m = malformed(&simple("<f4", "(3,)", &long));
    assert!(m.contains("has 13 bytes, expected 12"), "{m}");
}

#[test]
fn huge_claimed_shapes_are_too_large_before_any_allocation() {
    let big = simple("<f4", "(1099511627776, 1099511627776)", &[]);
    assert!(matches!(
        read_npy(&big, 1 << 20),
        Err(NpyError::TooLarge {
            limit: 1_048_576,
            actual: u64::MAX
        })
    ));
    let over = simple("<f4", "(100000, 100000)", &[]);
    assert!(matches!(
        read_npy(&over, 1 << 20),
        Err(NpyError::TooLarge {
            actual: 10_000_000_000,
            ..
        })
    ));
    let digits = simple("<f4", "(99999999999999999999999999999,)", &[]);
    assert!(matches!(
        read_npy(&digits, 10),
        Err(NpyError::TooLarge {
            actual: u64::MAX,
            ..
        })
    ));
    let empty_but_wide = simple("<f4", "(0, 18446744073709551615)", &[]);
    assert!(matches!(
        read_npy(&empty_but_wide, 10),
        Err(NpyError::TooLarge { .. })
    ));
    let at_limit = simple("|u1", "(2, 2)", &[1, 2, 3, 4]);
    assert!(read_npy(&at_limit, 4).is_ok());
    assert!(matches!(
        read_npy(&at_limit, 3),
        Err(NpyError::TooLarge {
            limit: 3,
            actual: 4
        })
    ));
}

#[test]
fn nan_infinity_and_out_of_range_doubles_are_reported_by_c_order_index() {
    let f4 = bytes_of([1.0_f32, f32::NAN].map(f32::to_le_bytes));
    assert!(matches!(
        read_npy(&simple("<f4", "(2,)", &f4), 9),
        Err(NpyError::NonFinite { index: 1 })
    ));
    let f8 = bytes_of([0.0, 1.0, 1e39_f64].map(f64::to_le_bytes));
    assert!(matches!(
        read_npy(&simple("<f8", "(3,)", &f8), 9),
        Err(NpyError::NonFinite { index: 2 })
    ));
    let f2 = bytes_of([0x7c00_u16].map(u16::to_le_bytes));
    assert!(matches!(
        read_npy(&simple("<f2", "(1,)", &f2), 9),
        Err(NpyError::NonFinite { index: 0 })
    ));
    // Fortran storage position 1 of a 2×3 array is C-order element [1][0] = 3.
    let f = bytes_of([0.0, f32::INFINITY, 0.0, 0.0, 0.0, 0.0].map(f32::to_le_bytes));
    let bytes = file(1, &header("<f4", true, "(2, 3)"), &f);
    assert!(matches!(
        read_npy(&bytes, 9),
        Err(NpyError::NonFinite { index: 3 })
    ));
}

#[test]
fn unsupported_dtypes_are_named_in_the_error() {
    for descr in ["<c8", "<U3", "|O", "|S4", "<M8[ns]", ">f16", "|i2", ""] {
        let err = read_npy(&simple(descr, "(1,)", &[0; 8]), 9).unwrap_err();
        assert!(
            matches!(err, NpyError::UnsupportedDtype(_)),
            "{descr}: {err:?}"
        );
        assert!(err.to_string().contains(&format!("`{descr}`")), "{err}");
    }
    let structured = "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }\n";
    assert!(matches!(
        read_npy(&file(1, structured, &[0; 4]), 9),
        Err(NpyError::UnsupportedDtype(_))
    ));
}

#[test]
fn garbage_and_broken_headers_are_malformed() {
    let ok_header = header("<f4", false, "(1,)");
    let data = 1.0_f32.to_le_bytes();
    assert!(malformed(b"").contains("magic"));
    assert!(malformed(b"PK\x03\x04 not npy at all").contains("magic"));
    assert!(malformed(b"\x93NUMPY\x01").contains("version"));
    assert!(malformed(b"\x93NUMPY\x01\x00\x10").contains("header length"));
    assert!(malformed(b"\x93NUMPY\x01\x00\xff\x00{").contains("exceeds"));
    assert!(malformed(&file(4, &ok_header, &data)).contains("version 4.0"));
    let broken = [
        ("not a dict", "expected '{'"),
        (
            "{'descr': '<f4', 'fortran_order': False}",
            "lacks key 'shape'",
        ),
        (
            "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,)}",
            "duplicate",
        ),
        (
            "{'descr': '<f4', 'fortran_order': false, 'shape': (1,)}",
            "True or False",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}",
            "unexpected key",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}",
            "non-negative",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,) 'x'}",
            "expected '}'",
        ),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} junk",
            "after the header",
        ),
        ("{'descr: '<f4'}", "expected ':'"),
        ("{'descr': '<f4", "unterminated"),
        (
            "{'descr': '<f4', 'fortran_order': False, 'shape': [1]}",
            "expected '('",
        ),
    ];
    for (text, needle) in broken {
        let m = malformed(&file(1, text, &data));
        assert!(m.contains(needle), "{text}: {m}");
    }
    let many_dims = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}) }}",
        "1,".repeat(65)
    );
    assert!(malformed(&file(1, &many_dims, &data)).contains("more than 64 dimensions"));
}

#[test]
fn every_truncation_and_single_byte_corruption_is_handled_without_panicking() {
    let valid = file(1, &header("<i2", true, "(2, 3)"), &[1; 12]);
    for end in 0..valid.len() {
        assert!(
            read_npy(&valid[..end], 100).is_err(),
            "prefix {end} should fail"
        );
    }
    for pos in 0..valid.len() {
        for byte in [0, b' ', b'(', b')', b',', b'\'', b'9', b'{', b'}', 0xff] {
            let mut corrupt = valid.clone();
            corrupt[pos] = byte;
            let _ = read_npy(&corrupt, 100);
        }
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = read_npy(&bytes, 1000);
    }

    #[test]
    fn arbitrary_header_text_never_panics(
        text in "[{}():,'\" <>|=a-zA-Z0-9_\n]{0,90}",
        data in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let _ = read_npy(&file(1, &text, &data), 1000);
        let _ = read_npy(&file(3, &text, &data), 1000);
    }
}
