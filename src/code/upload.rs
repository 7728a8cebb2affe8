//! NSML's upload: a code folder packed as a gzipped tar (what `.nsmlignore` or `.rushignore` names left out, within a
//! size limit) and unpacked into a session folder, so that editing the code afterwards changes no queued session.
//!
//! `rush run` packs the current folder and sends the archive to the daemon, which may be on another machine; a spec in
//! `experiments/` names its folder and the daemon packs it itself. Both unpack the same way, with the same checks.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::CodeError;

/// The most bytes of files a code folder may hold (before compression).
pub const MAX_CODE_BYTES: u64 = 64 << 20;

/// The ignore files a code folder may hold, in gitignore syntax (NSML's name and rush's).
pub const IGNORE_FILES: [&str; 2] = [".nsmlignore", ".rushignore"];

/// Folders never uploaded: version control and Python's byte-code caches.
const ALWAYS_LEFT_OUT: [&str; 3] = [".git", "__pycache__", ".ipynb_checkpoints"];

/// The files of `dir` to upload (relative paths, sorted) and their sizes.
pub fn files(dir: &Path) -> Result<Vec<(PathBuf, u64)>, CodeError> {
    if !dir.is_dir() {
        return Err(CodeError::NotAFolder(dir.to_path_buf()));
    }
    let mut walk = ignore::WalkBuilder::new(dir);
    walk.standard_filters(false).hidden(false).follow_links(false).sort_by_file_name(|a, b| a.cmp(b));
    for name in IGNORE_FILES {
        walk.add_custom_ignore_filename(name);
    }
    walk.filter_entry(|e| !ALWAYS_LEFT_OUT.iter().any(|n| e.file_name() == *n));
    let mut out = Vec::new();
    for entry in walk.build() {
        let entry = entry.map_err(|e| CodeError::Walk { dir: dir.to_path_buf(), message: e.to_string() })?;
        let Some(kind) = entry.file_type() else { continue };
        if !kind.is_file() {
            continue; // folders come with their files; symbolic links and devices are not uploaded
        }
        let path = entry.path();
        let size = entry
            .metadata()
            .map(|m| m.len())
            .map_err(|e| CodeError::Io { path: path.into(), source: std::io::Error::other(e.to_string()) })?;
        let rel = path.strip_prefix(dir).unwrap_or(path).to_path_buf();
        out.push((rel, size));
    }
    check_size(dir, &out)?;
    Ok(out)
}

/// Refuses a folder over [`MAX_CODE_BYTES`], naming its biggest files.
fn check_size(dir: &Path, files: &[(PathBuf, u64)]) -> Result<(), CodeError> {
    let total: u64 = files.iter().map(|(_, s)| s).sum();
    if total <= MAX_CODE_BYTES {
        return Ok(());
    }
    let mut biggest: Vec<&(PathBuf, u64)> = files.iter().collect();
    biggest.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let named: Vec<String> = biggest
        .iter()
        .take(5)
        .map(|(p, s)| format!("{} ({})", p.display(), crate::core::format::bytes(*s as i64)))
        .collect();
    Err(CodeError::TooBig { dir: dir.to_path_buf(), total, biggest: named.join(", ") })
}

/// Packs `dir` ([`files`]) as a gzipped tar.
pub fn pack(dir: &Path) -> Result<Vec<u8>, CodeError> {
    let list = files(dir)?;
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    for (rel, _) in &list {
        let path = dir.join(rel);
        tar.append_path_with_name(&path, rel).map_err(|source| CodeError::Io { path, source })?;
    }
    let gz = tar.into_inner().map_err(|source| CodeError::Io { path: dir.into(), source })?;
    gz.finish().map_err(|source| CodeError::Io { path: dir.into(), source })
}

/// Unpacks an archive made by [`pack`] into `dest` (created): regular files and folders only, every path inside
/// `dest`, at most [`MAX_CODE_BYTES`] in all whatever the headers claim.
pub fn unpack(archive: &[u8], dest: &Path) -> Result<u64, CodeError> {
    let bad = |message: String| CodeError::BadArchive { message };
    std::fs::create_dir_all(dest).map_err(|source| CodeError::Io { path: dest.into(), source })?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    let mut total = 0u64;
    let entries = tar.entries().map_err(|e| bad(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        let rel = entry.path().map_err(|e| bad(e.to_string()))?.into_owned();
        let normal = rel.components().all(|c| matches!(c, std::path::Component::Normal(_)));
        if !normal || rel.as_os_str().is_empty() {
            return Err(bad(format!("{}: a path outside the code folder", rel.display())));
        }
        let target = dest.join(&rel);
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                std::fs::create_dir_all(&target).map_err(|source| CodeError::Io { path: target, source })?;
            }
            tar::EntryType::Regular => {
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent).map_err(|source| CodeError::Io { path: parent.into(), source })?;
                }
                let mut out =
                    std::fs::File::create(&target).map_err(|source| CodeError::Io { path: target.clone(), source })?;
                let room = MAX_CODE_BYTES + 1 - total;
                let n = std::io::copy(&mut (&mut entry).take(room), &mut out)
                    .map_err(|source| CodeError::Io { path: target.clone(), source })?;
                total += n;
                if total > MAX_CODE_BYTES {
                    return Err(bad(format!(
                        "more than {} of files",
                        crate::core::format::bytes(MAX_CODE_BYTES as i64)
                    )));
                }
                let mode = entry.header().mode().unwrap_or(0o644) & 0o755;
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode | 0o600));
            }
            other => return Err(bad(format!("{}: unsupported entry type {other:?}", rel.display()))),
        }
    }
    Ok(total)
}

/// Copies a code folder into `dest` the way an upload does ([`pack`], then [`unpack`]).
pub fn copy(dir: &Path, dest: &Path) -> Result<u64, CodeError> {
    unpack(&pack(dir)?, dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn an_upload_leaves_out_what_the_ignore_files_name_and_round_trips() {
        let src = tempfile::tempdir().unwrap();
        let root = src.path();
        write(root, "main.py", "print('hi')\n");
        write(root, "model/net.py", "x = 1\n");
        write(root, "data/big.bin", "0123456789");
        write(root, "runs/log.txt", "old");
        write(root, "notes.tmp", "t");
        write(root, ".git/HEAD", "ref");
        write(root, "model/__pycache__/net.cpython-313.pyc", "pyc");
        write(root, ".nsmlignore", "data/\n*.tmp\n");
        write(root, ".rushignore", "runs\n");
        let names: Vec<String> = files(root).unwrap().iter().map(|(p, _)| p.display().to_string()).collect();
        assert_eq!(names, [".nsmlignore", ".rushignore", "main.py", "model/net.py"]);
        let dest = tempfile::tempdir().unwrap();
        let bytes = copy(root, &dest.path().join("code")).unwrap();
        assert_eq!(std::fs::read_to_string(dest.path().join("code/model/net.py")).unwrap(), "x = 1\n");
        assert!(!dest.path().join("code/data").exists() && !dest.path().join("code/runs").exists());
        assert_eq!(bytes, files(root).unwrap().iter().map(|(_, s)| s).sum::<u64>());
        // Editing the folder afterwards changes nothing of the copy.
        write(root, "main.py", "print('changed')\n");
        assert_eq!(std::fs::read_to_string(dest.path().join("code/main.py")).unwrap(), "print('hi')\n");
    }

    #[test]
    fn a_folder_over_the_limit_is_refused_naming_its_biggest_files() {
        let src = tempfile::tempdir().unwrap();
        let root = src.path();
        write(root, "main.py", "x");
        let big = std::fs::File::create(root.join("weights.pt")).unwrap();
        big.set_len(MAX_CODE_BYTES).unwrap();
        write(root, "small.txt", "1234");
        let e = pack(root).unwrap_err().to_string();
        assert!(e.contains("weights.pt (67.1 MB)") && e.contains(".nsmlignore"), "{e}");
        assert!(e.starts_with(&root.display().to_string()), "{e}");
        assert!(matches!(files(&root.join("main.py")), Err(CodeError::NotAFolder(_))));
    }

    #[test]
    fn an_archive_that_escapes_its_folder_or_holds_links_is_refused() {
        let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
        let mut header = tar::Header::new_gnu();
        header.set_size(1);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        // `append_data` refuses `..` itself: write the name into the raw header as a hostile client would.
        header.as_old_mut().name[..9].copy_from_slice(b"../evil.p");
        header.set_cksum();
        tar.append(&header, &b"x"[..]).unwrap();
        let bytes = tar.into_inner().unwrap().finish().unwrap();
        let dest = tempfile::tempdir().unwrap();
        let e = unpack(&bytes, &dest.path().join("code")).unwrap_err().to_string();
        assert!(e.contains("outside the code folder"), "{e}");
        assert!(!dest.path().join("evil.p").exists());

        let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        tar.append_link(&mut header, "labels", "/etc/passwd").unwrap();
        let bytes = tar.into_inner().unwrap().finish().unwrap();
        let e = unpack(&bytes, &dest.path().join("code2")).unwrap_err().to_string();
        assert!(e.contains("unsupported entry type"), "{e}");
        assert!(unpack(b"not a tarball", &dest.path().join("code3")).is_err());
    }
}
