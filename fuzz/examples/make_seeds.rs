//! Writes the JPEG and WebP seeds of `corpus/image/` (the PNG, BMP and GIF seeds are tiny
//! hand-made files): `cargo run --example make_seeds` in `fuzz/`.
//! An image seed is one byte choosing the colour mode, then the file.

fn main() {
    let img = image::RgbImage::from_fn(8, 6, |x, y| image::Rgb([x as u8 * 30, y as u8 * 40, 99]));
    let img = image::DynamicImage::ImageRgb8(img);
    for (format, name) in [
        (image::ImageFormat::Jpeg, "rgb8x6.jpg"),
        (image::ImageFormat::WebP, "rgb8x6.webp"),
    ] {
        let mut out = std::io::Cursor::new(vec![0u8]);
        out.set_position(1);
        img.write_to(&mut out, format).unwrap();
        let dir = option_env!("CARGO_MANIFEST_DIR").unwrap_or(".");
        let path = format!("{dir}/corpus/image/{name}");
        std::fs::write(&path, out.into_inner()).unwrap();
        println!("wrote {path}");
    }
}
