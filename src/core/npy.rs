//! numpy's `.npy` header (format 1.0), pure: the magic, the version and the header dict, padded so the data that
//! follows starts at a multiple of 64 bytes. Every `.npy` rush writes (submissions, probabilities, AI RUSH's
//! `train/train_label`) starts with it.

/// The first bytes of every `.npy` file.
pub const MAGIC: &[u8] = b"\x93NUMPY";

/// The header of a C-order array of numpy dtype `descr` (`<i8`, `<f2`, `|u1`) and `shape`.
pub fn header(descr: &str, shape: &[usize]) -> Vec<u8> {
    let shape = match shape {
        [n] => format!("({n},)"),
        _ => format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    let unpadded = MAGIC.len() + 2 + 2 + dict.len() + 1;
    dict.extend(std::iter::repeat_n(' ', unpadded.next_multiple_of(64) - unpadded));
    dict.push('\n');
    let mut bytes = Vec::with_capacity(MAGIC.len() + 4 + dict.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&[1, 0]);
    // a header of a few dimensions is far below u16::MAX
    bytes.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    bytes.extend_from_slice(dict.as_bytes());
    bytes
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_data_starts_at_a_multiple_of_64_bytes() {
        for shape in [vec![3], vec![700_000, 350], vec![]] {
            let h = super::header("|u1", &shape);
            assert_eq!(h.len() % 64, 0, "{shape:?}");
            assert_eq!(h.last(), Some(&b'\n'));
        }
        let text = String::from_utf8_lossy(&super::header("|u1", &[2, 350])).into_owned();
        assert!(text.contains("{'descr': '|u1', 'fortran_order': False, 'shape': (2, 350), }"), "{text}");
    }
}
