//! Draws one SVG into a square RGBA PNG with resvg: scaled evenly to fit, centred, on a transparent background.
//! resvg's pixmap is premultiplied; the PNG holds straight alpha.

use resvg::{tiny_skia, usvg};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RenderError {
    #[error("cannot parse the SVG: {0}")]
    Parse(String),
    #[error("the drawing is empty (nothing visible)")]
    Blank,
    #[error("cannot encode the PNG: {0}")]
    Encode(String),
}

/// Shared by all rendering threads.
pub struct Renderer {
    options: usvg::Options<'static>,
    size: u32,
}

impl Renderer {
    /// Panics if `size` is 0 (the CLI refuses it first).
    pub fn new(size: u32) -> Renderer {
        assert!(size > 0, "image size must be positive");
        let mut options = usvg::Options::default();
        // Never read files named by `<image href>` (no icon has any; a crafted one must not reach the disk).
        options.image_href_resolver.resolve_string = Box::new(|_, _| None);
        Renderer { options, size }
    }

    pub fn size(&self) -> u32 {
        self.size
    }

    /// Straight-alpha RGBA, `size * size * 4` bytes.
    pub fn render_rgba(&self, svg: &str) -> Result<Vec<u8>, RenderError> {
        let tree = usvg::Tree::from_str(svg, &self.options).map_err(|e| RenderError::Parse(e.to_string()))?;
        let (w, h) = (tree.size().width(), tree.size().height());
        let side = self.size as f32;
        let scale = (side / w).min(side / h);
        let transform =
            tiny_skia::Transform::from_row(scale, 0.0, 0.0, scale, (side - w * scale) / 2.0, (side - h * scale) / 2.0);
        let mut pixmap = tiny_skia::Pixmap::new(self.size, self.size).ok_or(RenderError::Blank)?;
        resvg::render(&tree, transform, &mut pixmap.as_mut());
        let mut rgba = pixmap.take();
        if rgba.chunks_exact(4).all(|p| p[3] == 0) {
            return Err(RenderError::Blank);
        }
        unpremultiply(&mut rgba);
        Ok(rgba)
    }

    /// A PNG file's bytes.
    pub fn render_png(&self, svg: &str) -> Result<Vec<u8>, RenderError> {
        let rgba = self.render_rgba(svg)?;
        encode_png(&rgba, self.size)
    }
}

/// Premultiplied -> straight alpha, rounding to nearest.
pub fn unpremultiply(rgba: &mut [u8]) {
    for p in rgba.chunks_exact_mut(4) {
        let a = p[3] as u32;
        if a != 0 && a != 255 {
            for c in &mut p[..3] {
                *c = ((*c as u32 * 255 + a / 2) / a).min(255) as u8;
            }
        }
    }
}

/// An 8-bit RGBA PNG.
pub fn encode_png(rgba: &[u8], size: u32) -> Result<Vec<u8>, RenderError> {
    let mut out = Vec::with_capacity(rgba.len() / 2);
    let mut encoder = png::Encoder::new(&mut out, size, size);
    encoder.set_color(png::ColorType::Rgba);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder.write_header().map_err(|e| RenderError::Encode(e.to_string()))?;
    writer.write_image_data(rgba).map_err(|e| RenderError::Encode(e.to_string()))?;
    writer.finish().map_err(|e| RenderError::Encode(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        let mut reader = png::Decoder::new(std::io::Cursor::new(bytes)).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgba);
        (info.width, info.height, buf)
    }

    #[test]
    fn a_wide_drawing_is_scaled_to_fit_and_centred() {
        // 20x10 red rectangle in a 20x10 view box -> 16x8 at 16 px, rows 4..12.
        let svg = r##"<svg xmlns="http://www.w3.org/2000/svg" width="20" height="10" viewBox="0 0 20 10"><rect width="20" height="10" fill="#ff0000"/></svg>"##;
        let png = Renderer::new(16).render_png(svg).unwrap();
        let (w, h, px) = decode(&png);
        assert_eq!((w, h), (16, 16));
        let at = |x: usize, y: usize| &px[(y * 16 + x) * 4..(y * 16 + x) * 4 + 4];
        assert_eq!(at(8, 8), [255, 0, 0, 255]);
        assert_eq!(at(0, 4), [255, 0, 0, 255]);
        assert_eq!(at(8, 2)[3], 0);
        assert_eq!(at(8, 13)[3], 0);
    }

    #[test]
    fn half_transparent_colour_is_stored_unpremultiplied() {
        let svg = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 4 4"><rect width="4" height="4" fill="#4080c0" fill-opacity="0.5"/></svg>"##;
        let rgba = Renderer::new(4).render_rgba(svg).unwrap();
        let p = &rgba[..4];
        assert!((127..=128).contains(&p[3]), "{p:?}");
        for (got, want) in p[..3].iter().zip([0x40, 0x80, 0xc0]) {
            assert!((*got as i32 - want).abs() <= 2, "{p:?}");
        }
    }

    #[test]
    fn broken_and_empty_svgs_are_errors_not_panics() {
        let renderer = Renderer::new(8);
        assert!(matches!(renderer.render_png("<svg"), Err(RenderError::Parse(_))));
        let empty = r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 4 4"></svg>"#;
        assert_eq!(renderer.render_png(empty), Err(RenderError::Blank));
    }

    #[test]
    fn unpremultiply_rounds_and_keeps_opaque_and_clear_pixels() {
        let mut px = [64, 32, 0, 128, 10, 20, 30, 255, 0, 0, 0, 0];
        unpremultiply(&mut px);
        assert_eq!(px, [128, 64, 0, 128, 10, 20, 30, 255, 0, 0, 0, 0]);
    }
}
