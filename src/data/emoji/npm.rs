//! npm tarballs as `scripts/fetch-npm.sh` caches them (`npm pack NAME@VERSION`), read in place: the gzip stream is
//! walked once and only the wanted entries are kept in memory, nothing is unpacked to disk.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::EmojiError;
use super::recipe::npm_name_version;

/// Where the set-up script puts the tarballs: `${RUSH_CACHE:-$HOME/.cache/rush}/npm`.
pub fn default_cache_dir() -> PathBuf {
    crate::home::machine_cache().join("npm")
}

/// The file `npm pack` writes: `@scope/name@1.2.3` -> `scope-name-1.2.3.tgz`.
pub fn tarball_file_name(spec: &str) -> Option<String> {
    let (name, version) = npm_name_version(spec)?;
    Some(format!("{}-{version}.tgz", name.trim_start_matches('@').replace('/', "-")))
}

/// The path of a pinned tarball in `dir`; an error naming it (and the set-up script) when it is missing.
pub fn tarball_path(dir: &Path, spec: &str) -> Result<PathBuf, EmojiError> {
    let file = tarball_file_name(spec).ok_or_else(|| EmojiError::Recipe {
        file: "recipe".into(),
        message: format!("`{spec}` is not NAME@VERSION"),
    })?;
    let path = dir.join(file);
    if path.is_file() { Ok(path) } else { Err(EmojiError::MissingTarball { spec: spec.to_string(), path }) }
}

/// Reads the entries whose path inside the package (the leading `package/` folder stripped) passes `want`.
pub fn read_entries(tarball: &Path, want: impl Fn(&str) -> bool) -> Result<BTreeMap<String, Vec<u8>>, EmojiError> {
    let bad = |message: String| EmojiError::Tarball { path: tarball.to_path_buf(), message };
    let file = std::fs::File::open(tarball).map_err(|source| EmojiError::Io { path: tarball.to_path_buf(), source })?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    let mut found = BTreeMap::new();
    for entry in archive.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let full = entry.path().map_err(|e| bad(e.to_string()))?.to_string_lossy().into_owned();
        // npm packs everything under one top folder, usually `package/`.
        let Some((_, inner)) = full.split_once('/') else { continue };
        if !want(inner) {
            continue;
        }
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut bytes).map_err(|e| bad(format!("{full}: {e}")))?;
        found.insert(inner.to_string(), bytes);
    }
    Ok(found)
}

/// One entry that must be present.
pub fn take_entry(entries: &mut BTreeMap<String, Vec<u8>>, tarball: &Path, name: &str) -> Result<Vec<u8>, EmojiError> {
    entries
        .remove(name)
        .ok_or_else(|| EmojiError::MissingEntry { tarball: tarball.to_path_buf(), entry: name.to_string() })
}

/// Parses one JSON entry, naming tarball and entry on error.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8], tarball: &Path, entry: &str) -> Result<T, EmojiError> {
    serde_json::from_slice(bytes).map_err(|e| EmojiError::Json {
        tarball: tarball.to_path_buf(),
        entry: entry.to_string(),
        message: e.to_string(),
    })
}

/// The `license` field of `package.json`, if any.
pub fn package_licence(entries: &BTreeMap<String, Vec<u8>>) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(entries.get("package.json")?).ok()?;
    value.get("license")?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tarball_names_follow_npm_pack() {
        assert_eq!(tarball_file_name("@iconify-json/noto-v1@1.2.5").as_deref(), Some("iconify-json-noto-v1-1.2.5.tgz"));
        assert_eq!(tarball_file_name("emojibase-data@17.0.0").as_deref(), Some("emojibase-data-17.0.0.tgz"));
        assert_eq!(tarball_file_name("noversion"), None);
    }

    #[test]
    fn reads_wanted_entries_from_a_gzipped_tar_and_names_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x-1.0.0.tgz");
        let gz = flate2::write::GzEncoder::new(std::fs::File::create(&path).unwrap(), flate2::Compression::fast());
        let mut builder = tar::Builder::new(gz);
        for (name, body) in [("package/package.json", &br#"{"license":"MIT"}"#[..]), ("package/a/b.svg", b"<svg/>")] {
            let mut header = tar::Header::new_gnu();
            header.set_size(body.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, name, body).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap();

        let mut entries = read_entries(&path, |p| p.ends_with(".svg") || p == "package.json").unwrap();
        assert_eq!(entries.keys().collect::<Vec<_>>(), ["a/b.svg", "package.json"]);
        assert_eq!(package_licence(&entries).as_deref(), Some("MIT"));
        assert_eq!(take_entry(&mut entries, &path, "a/b.svg").unwrap(), b"<svg/>");
        let err = take_entry(&mut entries, &path, "icons.json").unwrap_err().to_string();
        assert!(err.contains("x-1.0.0.tgz") && err.contains("icons.json"), "{err}");

        let err = tarball_path(dir.path(), "y@2.0.0").unwrap_err().to_string();
        assert!(err.contains("y-2.0.0.tgz") && err.contains("fetch-npm.sh"), "{err}");
    }
}
