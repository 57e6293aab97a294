//! Image previews: a small JPEG made on the server as soon as a photo is complete, so the
//! message naming the photo can carry it (a few KB in the normal lane, long before the
//! full photo has crossed a slow uplink).

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder as _, ImageReader};

use crate::config::MediaConfig;

/// The preview of the image `bytes`: JPEG bytes, width, height. None when the image
/// cannot be decoded or is larger than `max_preview_source_pixels` (it still travels;
/// it only has no preview).
pub(super) fn make(bytes: &[u8], cfg: &MediaConfig) -> Option<(Vec<u8>, u32, u32)> {
    match try_make(bytes, cfg) {
        Ok(p) => p,
        Err(e) => {
            tracing::info!(size = bytes.len(), error = %e, "no preview for this image");
            None
        }
    }
}

fn try_make(bytes: &[u8], cfg: &MediaConfig) -> Result<Option<(Vec<u8>, u32, u32)>, image::ImageError> {
    let reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format()?;
    let mut decoder = reader.into_decoder()?;
    let (w, h) = decoder.dimensions();
    if u64::from(w) * u64::from(h) > cfg.max_preview_source_pixels {
        tracing::info!(w, h, "image too large to preview (media.max_preview_source_pixels)");
        return Ok(None);
    }
    // Phones store photos sideways and say so in EXIF; the preview must stand upright.
    let orientation = decoder.orientation()?;
    let mut img = DynamicImage::from_decoder(decoder)?;
    img.apply_orientation(orientation);
    let side = cfg.preview_max_side;
    let small = img.thumbnail(side, side).to_rgb8();
    let mut out = Vec::new();
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, cfg.preview_quality);
    small.write_with_encoder(encoder)?;
    Ok(Some((out, small.width(), small.height())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn photo(w: u32, h: u32) -> tempfile::NamedTempFile {
        // Noise compresses badly, like a real photo.
        let mut seed = 0x2545_f491_u32;
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            image::Rgb([(x % 256) as u8, (y % 256) as u8, (seed & 0xff) as u8])
        });
        let f = tempfile::Builder::new().suffix(".jpg").tempfile().unwrap_or_else(|e| panic!("{e}"));
        img.save_with_format(f.path(), image::ImageFormat::Jpeg).unwrap_or_else(|e| panic!("{e}"));
        f
    }

    fn read(f: &tempfile::NamedTempFile) -> Vec<u8> {
        std::fs::read(f.path()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn previews_are_small_upright_jpegs_of_bounded_side() {
        let f = photo(1600, 1200);
        let cfg = MediaConfig::default();
        let (jpeg, w, h) = make(&read(&f), &cfg).unwrap_or_else(|| panic!("a preview"));
        assert_eq!((w, h), (256, 192), "longer side scaled to preview_max_side, aspect kept");
        assert_eq!(&jpeg[..3], &[0xFF, 0xD8, 0xFF]);
        assert!(jpeg.len() < 40_000, "a few KB, not {}", jpeg.len());
        let source = std::fs::metadata(f.path()).map(|m| m.len()).unwrap_or(0);
        assert!((jpeg.len() as u64) * 20 < source, "preview {} vs photo {source}", jpeg.len());
    }

    #[test]
    fn oversized_or_broken_images_get_no_preview() {
        let f = photo(400, 300);
        let cfg = MediaConfig { max_preview_source_pixels: 100_000, ..MediaConfig::default() };
        assert!(make(&read(&f), &cfg).is_none());
        assert!(make(&[0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3], &MediaConfig::default()).is_none());
    }
}
