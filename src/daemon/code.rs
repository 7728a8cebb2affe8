//! Code sessions at the daemon: the runtime a queued one gets (the config's Python and sandbox), the refusal where the
//! sandbox cannot run, and the upload (`code::upload`) placed in its session folder, so that editing the code after
//! queueing changes nothing.

use std::path::{Path, PathBuf};

use super::{Daemon, DaemonError};
use crate::code::upload;
use crate::core::session::SessionId;
use crate::core::spec::{CodeRuntime, Spec};

/// An upload unpacked and checked, waiting for its session's number.
#[derive(Debug)]
pub struct StagedCode {
    dir: PathBuf,
}

impl Drop for StagedCode {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Daemon {
    /// How a code session queued now runs.
    pub fn code_runtime(&self) -> CodeRuntime {
        CodeRuntime {
            python: self.config.python.clone(),
            sandbox: self.config.sandbox == super::config::SandboxMode::On,
            envs: self.home().root().join("envs"),
        }
    }

    /// Why code sessions cannot run here, if they cannot: the sandbox is on and bubblewrap does not work (probed once).
    pub fn code_refusal(&self) -> Option<String> {
        if self.config.sandbox == super::config::SandboxMode::Off {
            return None;
        }
        self.sandbox_probe
            .get_or_init(|| crate::code::sandbox::Bwrap::probe().map(|_| ()))
            .as_ref()
            .err()
            .map(|why| format!("code sessions are refused here: {why}"))
    }

    /// The spec's JSON as its session runs it: the dataset's folder, a fork's checkpoint, a code session's runtime.
    pub(crate) fn resolved_json(&self, id: &SessionId, spec: &Spec, init_from: Option<PathBuf>) -> String {
        let runtime = spec.is_code().then(|| self.code_runtime());
        super::resolved_json_with(self.home(), id, spec, init_from, runtime)
    }

    /// Checks that a code spec can run here and unpacks its upload into a staging folder; `source` names the spec in
    /// errors.
    pub async fn stage_code(&self, source: &str, spec: &Spec, archive: Vec<u8>) -> Result<StagedCode, DaemonError> {
        if let Some(why) = self.code_refusal() {
            return Err(DaemonError::Invalid(format!("{source}: {why}")));
        }
        let entry = spec.entry.clone().unwrap_or_default();
        let tmp = self.home().root().join("tmp");
        let staged = StagedCode { dir: tmp.join(format!("upload-{}-{}", std::process::id(), unique())) };
        let dir = staged.dir.clone();
        let source = source.to_string();
        tokio::task::spawn_blocking(move || {
            upload::unpack(&archive, &dir).map_err(|e| DaemonError::Invalid(format!("{source}: {e}")))?;
            if !dir.join(&entry).is_file() {
                return Err(DaemonError::Invalid(format!(
                    "{source}: field `entry`: {entry} is not in the uploaded code folder"
                )));
            }
            Ok(())
        })
        .await
        .map_err(|e| DaemonError::Invalid(format!("unpacking the code crashed: {e}")))??;
        Ok(staged)
    }

    /// Packs the code folder a spec file names (`code:`, relative to the file; else the file's own folder).
    pub async fn pack_code_of_file(&self, file: &Path, spec: &Spec) -> Result<Vec<u8>, String> {
        let base = file.parent().unwrap_or(Path::new("."));
        let dir = base.join(spec.code.as_deref().unwrap_or("."));
        let key = file.display().to_string();
        tokio::task::spawn_blocking(move || upload::pack(&dir).map_err(|e| format!("{key}: field `code`: {e}")))
            .await
            .map_err(|e| format!("packing the code crashed: {e}"))?
    }

    /// Moves a staged upload into the session's folder as `code/`.
    pub async fn place_code(&self, id: &SessionId, staged: StagedCode) -> Result<(), DaemonError> {
        let session = self.home().session(id);
        let target = session.join(crate::code::child::CODE_DIR);
        tokio::fs::create_dir_all(&session)
            .await
            .map_err(|e| DaemonError::Invalid(format!("{}: {e}", session.display())))?;
        tokio::fs::rename(&staged.dir, &target)
            .await
            .map_err(|e| DaemonError::Invalid(format!("{}: {e}", target.display())))?;
        Ok(())
    }

    /// Stages a copy of a code session's code, for a fork of it.
    pub async fn stage_code_of_session(
        &self,
        source: &str,
        from: &SessionId,
        spec: &Spec,
    ) -> Result<StagedCode, DaemonError> {
        let src = self.home().session(from).join(crate::code::child::CODE_DIR);
        let archive = tokio::task::spawn_blocking(move || upload::pack(&src))
            .await
            .map_err(|e| DaemonError::Invalid(format!("packing the code crashed: {e}")))?
            .map_err(|e| DaemonError::Invalid(format!("{source}: {e}")))?;
        self.stage_code(source, spec, archive).await
    }
}

/// A number no other staging folder of this process uses.
fn unique() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}
