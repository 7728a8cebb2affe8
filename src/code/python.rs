//! A code session's Python: the daemon's interpreter (the set-up venv, with torch), or an environment built once from
//! the code's `requirements.txt` (or the `install_requires` of its `setup.py`, read as data, never executed) and cached
//! by content.
//!
//! The environment sits on top of the daemon's venv, so torch is never downloaded again: a venv on the same base
//! interpreter whose `.pth` file puts the daemon's site-packages on the path, and into which `uv` installs only what
//! the daemon's venv lacks. uv resolves the requirements with the daemon's packages as constraints (`uv pip compile
//! -c`), so a requirement that torch satisfies (torchvision) gets the version that matches the installed torch, then
//! installs the difference without dependencies.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::Digest;

use super::CodeError;

/// The marker of a finished environment.
const COMPLETE: &str = ".rush-complete";

/// What a code folder asks to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirements {
    /// The file it came from.
    pub file: PathBuf,
    /// `requirements.txt` lines (from `setup.py`: one per `install_requires` item).
    pub text: String,
}

/// The requirements of the code folder `code`: `requirements.txt`, else `setup.py`'s `install_requires`; `None` when
/// there are none (the session runs on the daemon's Python as it is).
pub fn requirements(code: &Path) -> Result<Option<Requirements>, CodeError> {
    let io = |path: &Path, source| CodeError::Io { path: path.into(), source };
    let txt = code.join("requirements.txt");
    if txt.is_file() {
        let text = std::fs::read_to_string(&txt).map_err(|e| io(&txt, e))?;
        let real = text.lines().any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
        return Ok(real.then_some(Requirements { file: txt, text }));
    }
    let setup = code.join("setup.py");
    if setup.is_file() {
        let source = std::fs::read_to_string(&setup).map_err(|e| io(&setup, e))?;
        let items = install_requires(&source);
        if !items.is_empty() {
            return Ok(Some(Requirements { file: setup, text: items.join("\n") + "\n" }));
        }
    }
    Ok(None)
}

/// The string literals of `install_requires=[...]` in a `setup.py`'s text (never executed).
pub fn install_requires(source: &str) -> Vec<String> {
    let Some(at) = source.find("install_requires") else { return vec![] };
    let rest = &source[at..];
    let (Some(open), Some(close)) = (rest.find('['), rest.find(']')) else { return vec![] };
    if close < open {
        return vec![];
    }
    let list = &rest[open + 1..close];
    let mut out = Vec::new();
    let mut chars = list.chars();
    while let Some(c) = chars.next() {
        if c == '"' || c == '\'' {
            let item: String = chars.by_ref().take_while(|&d| d != c).collect();
            if !item.trim().is_empty() {
                out.push(item.trim().to_string());
            }
        } else if c == '#' {
            for d in chars.by_ref() {
                if d == '\n' {
                    break;
                }
            }
        }
    }
    out
}

/// The folder of the environment for `requirements` on `base` under `envs`: keyed by the interpreter and the text.
pub fn env_dir(envs: &Path, base: &Path, requirements: &Requirements) -> PathBuf {
    let mut hash = sha2::Sha256::new();
    hash.update(base.as_os_str().as_encoded_bytes());
    hash.update(b"\n");
    hash.update(requirements.text.as_bytes());
    envs.join(&hex::encode(hash.finalize())[..16])
}

/// The interpreter a code session runs: `base` itself without requirements, else the cached environment, built now
/// if need be (its progress goes to `log`). Two sessions building the same environment take turns (a file lock).
pub fn interpreter(
    base: &Path,
    code: &Path,
    envs: &Path,
    log: &mut dyn Write,
) -> Result<(PathBuf, Option<PathBuf>), CodeError> {
    let Some(req) = requirements(code)? else { return Ok((base.to_path_buf(), None)) };
    let dir = env_dir(envs, base, &req);
    let python = dir.join("bin/python");
    if dir.join(COMPLETE).is_file() {
        let _ = writeln!(log, "[rush] environment for {} (cached): {}", file_name(&req.file), dir.display());
        return Ok((python, Some(dir)));
    }
    let io = |path: &Path, source| CodeError::Io { path: path.into(), source };
    std::fs::create_dir_all(envs).map_err(|e| io(envs, e))?;
    let lock_path = dir.with_extension("lock");
    let lock = std::fs::File::create(&lock_path).map_err(|e| io(&lock_path, e))?;
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a file this function owns; released when `lock` is dropped.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(io(&lock_path, std::io::Error::last_os_error()));
    }
    if dir.join(COMPLETE).is_file() {
        return Ok((python, Some(dir)));
    }
    let _ = writeln!(log, "[rush] building the environment for {} in {}", file_name(&req.file), dir.display());
    let started = std::time::Instant::now();
    build(base, &req, &dir, log)?;
    std::fs::write(dir.join(COMPLETE), b"").map_err(|e| io(&dir, e))?;
    let _ = writeln!(log, "[rush] environment ready in {:.1} s", started.elapsed().as_secs_f64());
    Ok((python, Some(dir)))
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// `uv` beside the interpreter (a venv's `bin/`), else on the `PATH`.
fn uv(base: &Path) -> PathBuf {
    let beside = base.with_file_name("uv");
    if beside.is_file() { beside } else { PathBuf::from("uv") }
}

/// Runs a step of the build; its failure carries the tool's own message.
fn step(cmd: &mut Command, req: &Requirements, log: &mut dyn Write) -> Result<String, CodeError> {
    let shown = format!("{cmd:?}").replace('"', "");
    let _ = writeln!(log, "[rush] {shown}");
    // The daemon's log filter (`RUST_LOG`) is no setting of uv's.
    let out = cmd.env_remove("RUST_LOG").stdin(Stdio::null()).output().map_err(|e| CodeError::Install {
        file: req.file.clone(),
        message: format!("cannot run {}: {e} (install uv into the daemon's venv: `pip install uv`)", shown),
    })?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let _ = log.write_all(stderr.as_bytes());
    if !out.status.success() {
        let tail: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = tail[tail.len().saturating_sub(6)..].join(" | ");
        return Err(CodeError::Install { file: req.file.clone(), message: format!("{} ({})", tail, out.status) });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Builds the environment in `dir` (removed first: a build that died half-way is started over).
fn build(base: &Path, req: &Requirements, dir: &Path, log: &mut dyn Write) -> Result<(), CodeError> {
    let io = |path: &Path, source| CodeError::Io { path: path.into(), source };
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| io(dir, e))?;
    }
    let uv = uv(base);
    let work = dir.with_extension("build");
    std::fs::create_dir_all(&work).map_err(|e| io(&work, e))?;
    // What the daemon's venv has: constraints for the resolution, and what need not be installed.
    let frozen = step(Command::new(&uv).args(["pip", "freeze", "--python"]).arg(base), req, log)?;
    let installed: std::collections::BTreeSet<String> =
        frozen.lines().filter(|l| l.contains("==")).map(normalise).collect();
    let constraints = work.join("base.txt");
    std::fs::write(&constraints, installed.iter().map(|l| format!("{l}\n")).collect::<String>())
        .map_err(|e| io(&constraints, e))?;
    // The code's own requirements.txt where there is one (its relative lines, `./wheels/x.whl` or `-r base.txt`, are
    // read from the code folder, which is also the working folder of every step), else setup.py's list.
    let wanted = if req.file.ends_with("requirements.txt") {
        req.file.clone()
    } else {
        let listed = work.join("requirements.txt");
        std::fs::write(&listed, &req.text).map_err(|e| io(&listed, e))?;
        listed
    };
    let locked = work.join("lock.txt");
    // Relative lines (`-r other.txt`, `./pkg`) are read from the code folder.
    let code = req.file.parent().unwrap_or(Path::new("."));
    step(
        Command::new(&uv)
            .current_dir(code)
            .args(["pip", "compile", "-q", "--python"])
            .arg(base)
            .arg(&wanted)
            .arg("-c")
            .arg(&constraints)
            .arg("-o")
            .arg(&locked),
        req,
        log,
    )?;
    let lock = std::fs::read_to_string(&locked).map_err(|e| io(&locked, e))?;
    let missing: Vec<String> = lock
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('-'))
        .filter(|l| !installed.contains(&normalise(l)))
        .map(str::to_string)
        .collect();
    step(Command::new(&uv).args(["venv", "-q", "--python"]).arg(base).arg(dir), req, log)?;
    // The daemon's packages (torch) on the new environment's path.
    let mut site = |python: &Path| {
        step(Command::new(python).args(["-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]), req, log)
            .map(|s| PathBuf::from(s.trim()))
    };
    let base_site = site(base)?;
    let env_site = site(&dir.join("bin/python"))?;
    let pth = env_site.join("_rush_base.pth");
    std::fs::write(&pth, format!("{}\n", base_site.display())).map_err(|e| io(&pth, e))?;
    if missing.is_empty() {
        let _ = writeln!(log, "[rush] the daemon's venv already has every requirement");
    } else {
        let _ = writeln!(log, "[rush] installing {}", missing.join(" "));
        step(
            Command::new(&uv)
                .current_dir(code)
                .args(["pip", "install", "-q", "--no-deps", "--python"])
                .arg(dir.join("bin/python"))
                .args(&missing),
            req,
            log,
        )?;
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// `Name==1.0` as a comparable key (lower case, `_` and `.` as `-`, markers and comments dropped).
fn normalise(line: &str) -> String {
    let line = line.split(['#', ';']).next().unwrap_or("").trim();
    match line.split_once("==") {
        Some((name, version)) => format!("{}=={}", name.trim().to_lowercase().replace(['_', '.'], "-"), version.trim()),
        None => line.to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_py_requirements_are_read_as_data() {
        let source = "from setuptools import setup\nsetup(name='x',\n  install_requires=[\n    'pandas>=1.0',  # data\n    \"tqdm\",\n  ],\n)\n";
        assert_eq!(install_requires(source), ["pandas>=1.0", "tqdm"]);
        assert!(install_requires("setup(name='x')").is_empty());
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(requirements(dir.path()).unwrap(), None);
        std::fs::write(dir.path().join("setup.py"), source).unwrap();
        let req = requirements(dir.path()).unwrap().unwrap();
        assert_eq!(req.text, "pandas>=1.0\ntqdm\n");
        std::fs::write(dir.path().join("requirements.txt"), "# nothing\n\n").unwrap();
        assert_eq!(requirements(dir.path()).unwrap(), None, "a requirements.txt of comments asks for nothing");
        std::fs::write(dir.path().join("requirements.txt"), "numpy\n").unwrap();
        let req = requirements(dir.path()).unwrap().unwrap();
        assert!(req.file.ends_with("requirements.txt"));
        let envs = Path::new("/envs");
        let a = env_dir(envs, Path::new("/py"), &req);
        assert_eq!(a, env_dir(envs, Path::new("/py"), &req), "the same content, the same environment");
        assert_ne!(a, env_dir(envs, Path::new("/py2"), &req));
        assert_eq!(normalise("Typing_Extensions==4.1 ; python_version>'3'"), "typing-extensions==4.1");
    }
}
