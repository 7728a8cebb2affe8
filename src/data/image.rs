//! Decodes a sticker PNG to RGB u8 (HWC) at a square size: resize first, then composite the alpha on white.
//!
//! This is the hot path of the training input pipeline, so each thread keeps its buffers (file bytes, decoded pixels,
//! premultiplied pixels, resized pixels) and its `fast_image_resize` resizer between calls.
//!
//! The image is **stretched** to `size x size` (no padding): AI RUSH stickers are about 370x320, close to square, and
//! stretching keeps every source pixel. Colour and alpha are resized together as premultiplied RGBA (a bilinear
//! convolution, which averages over the whole footprint when downscaling), and only then composited on white, so
//! transparent pixels never bleed their (meaningless) colour into the edges.

use std::cell::RefCell;
use std::io::Read;
use std::path::{Path, PathBuf};

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, MulDiv, PixelType, ResizeAlg, ResizeOptions, Resizer};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: cannot decode PNG: {message}")]
    Decode { path: PathBuf, message: String },
}

/// Returns `size * size * 3` bytes, row-major RGB, alpha composited on white.
pub fn load_rgb(path: &Path, size: u32) -> Result<Vec<u8>, ImageError> {
    let mut out = Vec::new();
    load_rgb_into(path, size, &mut out)?;
    Ok(out)
}

/// Like [`load_rgb`], writing into `out` (cleared and resized to `size * size * 3`), so a caller can reuse it.
pub fn load_rgb_into(path: &Path, size: u32, out: &mut Vec<u8>) -> Result<(), ImageError> {
    LOADER.with(|loader| loader.borrow_mut().load(path, size, out))
}

/// Decodes PNG bytes already in memory (`path` only names them in errors).
pub fn decode_rgb_into(bytes: &[u8], path: &Path, size: u32, out: &mut Vec<u8>) -> Result<(), ImageError> {
    LOADER.with(|loader| loader.borrow_mut().decode(bytes, path, size, out))
}

thread_local! {
    static LOADER: RefCell<Loader> = RefCell::new(Loader::default());
}

/// One thread's reusable buffers.
#[derive(Default)]
struct Loader {
    file: Vec<u8>,
    decoded: Vec<u8>,
    premultiplied: Vec<u8>,
    resized: Vec<u8>,
    resizer: Resizer,
    mul_div: MulDiv,
}

impl Loader {
    fn load(&mut self, path: &Path, size: u32, out: &mut Vec<u8>) -> Result<(), ImageError> {
        let mut file = std::mem::take(&mut self.file);
        file.clear();
        let read = std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut file));
        let result = match read {
            Ok(_) => self.decode(&file, path, size, out),
            Err(source) => Err(ImageError::Io { path: path.to_path_buf(), source }),
        };
        self.file = file;
        result
    }

    fn decode(&mut self, bytes: &[u8], path: &Path, size: u32, out: &mut Vec<u8>) -> Result<(), ImageError> {
        let fail = |message: String| ImageError::Decode { path: path.to_path_buf(), message };
        if size == 0 {
            return Err(fail("requested size 0".into()));
        }
        let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        // 16-bit to 8-bit, palettes and low bit depths expanded, tRNS turned into an alpha channel.
        decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
        let mut reader = decoder.read_info().map_err(|e| fail(e.to_string()))?;
        let len = reader.output_buffer_size().ok_or_else(|| fail("image too large".into()))?;
        self.decoded.clear();
        self.decoded.resize(len, 0);
        let frame = reader.next_frame(&mut self.decoded).map_err(|e| fail(e.to_string()))?;
        let (width, height) = (frame.width, frame.height);
        let pixels = width as usize * height as usize;

        // Bring every colour type to either premultiplied RGBA (with alpha) or RGB (without).
        let with_alpha = match frame.color_type {
            png::ColorType::Rgba => {
                self.premultiplied.clear();
                self.premultiplied.resize(pixels * 4, 0);
                let src = ImageRef::new(width, height, &self.decoded[..pixels * 4], PixelType::U8x4)
                    .map_err(|e| fail(e.to_string()))?;
                let mut dst = Image::from_slice_u8(width, height, &mut self.premultiplied, PixelType::U8x4)
                    .map_err(|e| fail(e.to_string()))?;
                self.mul_div.multiply_alpha(&src, &mut dst).map_err(|e| fail(e.to_string()))?;
                true
            }
            png::ColorType::GrayscaleAlpha => {
                self.premultiplied.clear();
                self.premultiplied.reserve(pixels * 4);
                for ga in self.decoded[..pixels * 2].chunks_exact(2) {
                    let v = mul_255(ga[0], ga[1]);
                    self.premultiplied.extend_from_slice(&[v, v, v, ga[1]]);
                }
                true
            }
            png::ColorType::Rgb => {
                std::mem::swap(&mut self.premultiplied, &mut self.decoded);
                self.premultiplied.truncate(pixels * 3);
                false
            }
            png::ColorType::Grayscale => {
                self.premultiplied.clear();
                self.premultiplied.reserve(pixels * 3);
                for &v in &self.decoded[..pixels] {
                    self.premultiplied.extend_from_slice(&[v, v, v]);
                }
                false
            }
            png::ColorType::Indexed => return Err(fail("palette was not expanded".into())),
        };
        let (pixel_type, channels) = if with_alpha { (PixelType::U8x4, 4) } else { (PixelType::U8x3, 3) };

        let side = size as usize;
        let resized: &[u8] = if width == size && height == size {
            &self.premultiplied[..side * side * channels]
        } else {
            self.resized.clear();
            self.resized.resize(side * side * channels, 0);
            let src = ImageRef::new(width, height, &self.premultiplied[..pixels * channels], pixel_type)
                .map_err(|e| fail(e.to_string()))?;
            let mut dst =
                Image::from_slice_u8(size, size, &mut self.resized, pixel_type).map_err(|e| fail(e.to_string()))?;
            let options = ResizeOptions::new()
                .resize_alg(ResizeAlg::Convolution(FilterType::Bilinear))
                // Already premultiplied: resize the channels as they are.
                .use_alpha(false);
            self.resizer.resize(&src, &mut dst, &options).map_err(|e| fail(e.to_string()))?;
            &self.resized
        };

        out.clear();
        if with_alpha {
            // Premultiplied over white: c + 255 * (1 - a), which never exceeds 255 since c <= a.
            out.reserve(side * side * 3);
            for px in resized.chunks_exact(4) {
                let background = 255 - px[3];
                out.extend_from_slice(&[
                    px[0].saturating_add(background),
                    px[1].saturating_add(background),
                    px[2].saturating_add(background),
                ]);
            }
        } else {
            out.extend_from_slice(resized);
        }
        Ok(())
    }
}

/// `round(a * b / 255)` for bytes.
fn mul_255(a: u8, b: u8) -> u8 {
    let t = a as u32 * b as u32 + 128;
    ((t + (t >> 8)) >> 8) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_png(path: &Path, width: u32, height: u32, color: png::ColorType, depth: png::BitDepth, data: &[u8]) {
        let file = std::fs::File::create(path).unwrap();
        let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), width, height);
        encoder.set_color(color);
        encoder.set_depth(depth);
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(data).unwrap();
        writer.finish().unwrap();
    }

    #[test]
    fn transparent_pixels_become_white_and_opaque_keep_their_colour() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.png");
        // Left half transparent "red" (must not bleed), right half opaque blue.
        let (w, h) = (40, 20);
        let mut data = Vec::new();
        for _ in 0..h {
            for x in 0..w {
                data.extend_from_slice(if x < w / 2 { &[255, 0, 0, 0] } else { &[0, 0, 255, 255] });
            }
        }
        write_png(&path, w, h, png::ColorType::Rgba, png::BitDepth::Eight, &data);
        let rgb = load_rgb(&path, 10).unwrap();
        assert_eq!(rgb.len(), 10 * 10 * 3);
        assert_eq!(&rgb[0..3], &[255, 255, 255], "transparent corner is white");
        let last = (10 * 10 - 1) * 3;
        assert_eq!(&rgb[last..last + 3], &[0, 0, 255], "opaque corner keeps its colour");
        for y in 0..10 {
            for x in 0..10 {
                let p = &rgb[(y * 10 + x) * 3..][..3];
                // Composited on white with no red bleeding: red channel equals green channel everywhere.
                assert_eq!(p[0], p[1], "pixel {x},{y} = {p:?}");
            }
        }
    }

    #[test]
    fn decodes_gray_rgb_and_sixteen_bit() {
        let dir = tempfile::tempdir().unwrap();
        let gray = dir.path().join("g.png");
        write_png(&gray, 8, 8, png::ColorType::Grayscale, png::BitDepth::Eight, &[100; 64]);
        assert_eq!(load_rgb(&gray, 4).unwrap(), vec![100; 48]);

        let rgb = dir.path().join("rgb.png");
        write_png(&rgb, 4, 4, png::ColorType::Rgb, png::BitDepth::Eight, &[10, 20, 30].repeat(16));
        assert_eq!(load_rgb(&rgb, 4).unwrap(), [10, 20, 30].repeat(16));

        let wide = dir.path().join("16.png");
        // 16-bit RGBA, half-transparent black: composites to mid grey.
        let px = [0u8, 0, 0, 0, 0, 0, 0x80, 0x00];
        write_png(&wide, 6, 6, png::ColorType::Rgba, png::BitDepth::Sixteen, &px.repeat(36));
        let out = load_rgb(&wide, 3).unwrap();
        assert!(out.iter().all(|&v| (126..=128).contains(&v)), "{out:?}");

        let ga = dir.path().join("ga.png");
        write_png(&ga, 2, 2, png::ColorType::GrayscaleAlpha, png::BitDepth::Eight, &[0, 255, 0, 0, 0, 255, 0, 0]);
        let out = load_rgb(&ga, 2).unwrap();
        assert_eq!(out, vec![0, 0, 0, 255, 255, 255, 0, 0, 0, 255, 255, 255]);
    }

    #[test]
    fn truncated_png_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.png");
        write_png(&path, 30, 30, png::ColorType::Rgb, png::BitDepth::Eight, &[7; 2700]);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = load_rgb(&path, 8).unwrap_err();
        assert!(matches!(err, ImageError::Decode { .. }), "{err:?}");
        assert!(err.to_string().contains("t.png"), "{err}");

        std::fs::write(&path, b"not a png at all").unwrap();
        let err = load_rgb(&path, 8).unwrap_err();
        assert!(matches!(err, ImageError::Decode { .. }) && err.to_string().contains("t.png"), "{err}");

        let err = load_rgb(&dir.path().join("missing.png"), 8).unwrap_err();
        assert!(matches!(err, ImageError::Io { .. }) && err.to_string().contains("missing.png"), "{err}");
    }
}
