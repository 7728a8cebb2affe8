//! Safe file serving: a path from a URL is resolved under a root folder (a session folder inside `$RUSH_HOME`) and can
//! never leave it, whether through `..`, an absolute path, or a symlink that points outside.
//!
//! The check is done twice: lexically (only plain components are accepted) and on the real file system (the
//! canonical path must still start with the canonical root), so a symlink planted inside the root is caught too.

use std::path::{Component, Path, PathBuf};

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Why a path was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FileError {
    #[error("path {0:?} is not a plain relative path")]
    NotRelative(String),
    #[error("path {0:?} leaves the folder it is served from")]
    Escapes(String),
    #[error("no file {0:?}")]
    NotFound(String),
}

impl IntoResponse for FileError {
    fn into_response(self) -> Response {
        let status = match self {
            FileError::NotFound(_) => StatusCode::NOT_FOUND,
            FileError::NotRelative(_) | FileError::Escapes(_) => StatusCode::BAD_REQUEST,
        };
        (status, format!("{self}\n")).into_response()
    }
}

/// Resolves `relative` under `root` to a regular file that is really inside `root`.
pub fn resolve(root: &Path, relative: &str) -> Result<PathBuf, FileError> {
    let refused = || FileError::NotRelative(relative.to_string());
    if relative.is_empty() || relative.contains('\0') || relative.contains('\\') {
        return Err(refused());
    }
    let rel = Path::new(relative);
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(refused());
    }
    let root = root.canonicalize().map_err(|_| FileError::NotFound(relative.to_string()))?;
    let full = root.join(rel).canonicalize().map_err(|_| FileError::NotFound(relative.to_string()))?;
    if !full.starts_with(&root) {
        return Err(FileError::Escapes(relative.to_string()));
    }
    if !full.is_file() {
        return Err(FileError::NotFound(relative.to_string()));
    }
    Ok(full)
}

/// The content type by extension (what the dashboard serves: logs, events, specs, checkpoints).
fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        // A JSON-lines file (`events.jsonl`) is not one JSON document: shown as text, like the log.
        Some("log" | "txt" | "yaml" | "yml" | "csv" | "tsv" | "jsonl") => "text/plain; charset=utf-8",
        Some("json") => "application/json",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    }
}

/// Streams the file at `relative` under `root`, or answers why not. Binary files come as attachments so a browser
/// downloads a checkpoint instead of showing it; text is served as plain text (never HTML, so a log cannot script).
pub async fn serve(root: &Path, relative: &str) -> Response {
    let path = match resolve(root, relative) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(_) => return FileError::NotFound(relative.to_string()).into_response(),
    };
    let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let ctype = content_type(&path);
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file").replace(['"', '\\'], "_");
    let disposition = if ctype == "application/octet-stream" {
        format!("attachment; filename=\"{name}\"")
    } else {
        "inline".to_string()
    };
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    (
        [
            (header::CONTENT_TYPE, ctype.to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
            (header::CONTENT_DISPOSITION, disposition),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("home/sessions/local/emoji/1");
        std::fs::create_dir_all(root.join("checkpoints")).unwrap();
        std::fs::write(root.join("train.log"), "line 1\n").unwrap();
        std::fs::write(root.join("checkpoints/3.safetensors"), [0u8; 8]).unwrap();
        std::fs::write(tmp.path().join("home/secret.csv"), "labels").unwrap();
        (tmp, root)
    }

    #[test]
    fn plain_paths_inside_resolve() {
        let (_tmp, root) = setup();
        assert!(resolve(&root, "train.log").unwrap().ends_with("train.log"));
        assert!(resolve(&root, "checkpoints/3.safetensors").is_ok());
        assert_eq!(resolve(&root, "missing.log"), Err(FileError::NotFound("missing.log".into())));
        assert_eq!(resolve(&root, "checkpoints"), Err(FileError::NotFound("checkpoints".into())), "not a file");
    }

    #[test]
    fn dot_dot_and_absolute_paths_are_refused() {
        let (tmp, root) = setup();
        let abs = tmp.path().join("home/secret.csv");
        for bad in [
            "../../../../secret.csv",
            "checkpoints/../../../../../secret.csv",
            "./train.log",
            "",
            "a\\..\\b",
            "train.log\0",
            abs.to_str().unwrap(),
            "/etc/passwd",
        ] {
            assert!(matches!(resolve(&root, bad), Err(FileError::NotRelative(_))), "{bad:?} must be refused");
        }
    }

    #[test]
    fn symlinks_out_of_the_root_are_refused() {
        let (tmp, root) = setup();
        std::os::unix::fs::symlink(tmp.path().join("home/secret.csv"), root.join("evil.log")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("home"), root.join("up")).unwrap();
        assert_eq!(resolve(&root, "evil.log"), Err(FileError::Escapes("evil.log".into())));
        assert_eq!(resolve(&root, "up/secret.csv"), Err(FileError::Escapes("up/secret.csv".into())));
        // A link that stays inside is fine.
        std::os::unix::fs::symlink(root.join("train.log"), root.join("alias.log")).unwrap();
        assert!(resolve(&root, "alias.log").is_ok());
    }

    #[tokio::test]
    async fn serve_streams_with_safe_headers() {
        let (_tmp, root) = setup();
        let r = serve(&root, "train.log").await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/plain; charset=utf-8");
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        assert_eq!(&body[..], b"line 1\n");
        std::fs::write(root.join("events.jsonl"), "{\"event\":\"started\"}\n{\"event\":\"finished\"}\n").unwrap();
        let r = serve(&root, "events.jsonl").await;
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/plain; charset=utf-8", "JSON lines are not one document");
        let r = serve(&root, "checkpoints/3.safetensors").await;
        assert!(r.headers()[header::CONTENT_DISPOSITION].to_str().unwrap().starts_with("attachment"));
        assert_eq!(serve(&root, "../x").await.status(), StatusCode::BAD_REQUEST);
        assert_eq!(serve(&root, "nope").await.status(), StatusCode::NOT_FOUND);
    }
}
