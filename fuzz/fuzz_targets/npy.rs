//! `.npy` reader: any bytes, a bounded element count.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((shape, values)) = convd::npy::read_npy(data, 1 << 20) {
        assert_eq!(shape.iter().product::<usize>(), values.len());
    }
});
