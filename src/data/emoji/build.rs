//! `rush dataset build emoji`: reads the pinned tarballs, plans the tags, renders every style's drawings in parallel and
//! writes the AI RUSH layout into a staging folder that replaces the output folder only when complete.

use std::collections::BTreeSet;
use std::fmt;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;

use super::emojibase::{self, Emojibase};
use super::icons::{self, EmojiKeys, IconSet};
use super::recipe::{Recipe, Split, Style};
use super::render::Renderer;
use super::tags::{self, TagInput, TagKind, TagPlan};
use super::{EmojiError, npm};
use crate::data::layout::{self, NUM_TAGS};

/// Keywords per language written to `tag.tsv` for each tag.
const KEYWORDS_PER_LANGUAGE: usize = 3;

#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub recipe: Recipe,
    pub out: PathBuf,
    /// Image width and height in pixels.
    pub size: u32,
    /// The folder holding the npm tarballs.
    pub tarballs: PathBuf,
    /// Only these styles (empty: all).
    pub styles: Vec<String>,
    /// Worker threads (None: all cores).
    pub threads: Option<usize>,
    /// Draw a progress bar (only ever on a terminal).
    pub progress: bool,
    /// Replace an existing dataset at `out`.
    pub force: bool,
}

/// A drawing that could not be rendered (skipped).
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub sticker_id: String,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct StyleReport {
    pub name: String,
    pub family: String,
    pub split: Split,
    pub source: String,
    pub licence: String,
    /// Emoji of the universe the style has a drawing for.
    pub mapped: usize,
    /// PNGs written.
    pub images: usize,
    pub failures: Vec<Failure>,
    /// The tarball's `package.json` licence when it differs from the recipe's.
    pub licence_mismatch: Option<String>,
}

#[derive(Debug, Clone)]
pub struct BuildReport {
    pub out: PathBuf,
    pub size: u32,
    pub threads: usize,
    /// Emoji in the universe.
    pub universe: usize,
    pub classes: usize,
    pub tags: usize,
    /// Tags with no emoji, added to reach [`NUM_TAGS`].
    pub padded_tags: usize,
    pub styles: Vec<StyleReport>,
    /// Whole build, reading tarballs to the last file.
    pub seconds: f64,
    pub render_seconds: f64,
}

impl BuildReport {
    pub fn images(&self) -> usize {
        self.styles.iter().map(|s| s.images).sum()
    }

    pub fn images_per_second(&self) -> f64 {
        self.images() as f64 / self.seconds.max(1e-9)
    }

    pub fn failures(&self) -> usize {
        self.styles.iter().map(|s| s.failures.len()).sum()
    }
}

impl fmt::Display for BuildReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<18} {:<11} {:<5} {:>6} {:>6} {:>6}  licence",
            "style", "family", "split", "mapped", "images", "failed"
        )?;
        for s in &self.styles {
            writeln!(
                f,
                "{:<18} {:<11} {:<5} {:>6} {:>6} {:>6}  {}",
                s.name,
                s.family,
                s.split.as_str(),
                s.mapped,
                s.images,
                s.failures.len(),
                s.licence
            )?;
        }
        let per_split = |split: Split| self.styles.iter().filter(|s| s.split == split).map(|s| s.images).sum::<usize>();
        writeln!(
            f,
            "{} images at {} px (train {}, valid {}, test {}), {} skipped; {} emoji, {} classes, {} tags{}",
            self.images(),
            self.size,
            per_split(Split::Train),
            per_split(Split::Valid),
            per_split(Split::Test),
            self.failures(),
            self.universe,
            self.classes,
            self.tags,
            if self.padded_tags > 0 {
                format!(" ({} padding tags with no emoji)", self.padded_tags)
            } else {
                String::new()
            }
        )?;
        write!(
            f,
            "built {} in {:.1} s: {:.0} images/s overall, {:.0} images/s rendering on {} threads",
            self.out.display(),
            self.seconds,
            self.images_per_second(),
            self.images() as f64 / self.render_seconds.max(1e-9),
            self.threads
        )
    }
}

/// Builds the dataset.
pub fn build(options: &BuildOptions) -> Result<BuildReport, EmojiError> {
    let started = Instant::now();
    if !(8..=4096).contains(&options.size) {
        return Err(EmojiError::Size { size: options.size });
    }
    let recipe = &options.recipe;
    let styles = recipe.select(&options.styles)?;
    check_output(&options.out, options.force)?;
    let emojibase_tarball = npm::tarball_path(&options.tarballs, &recipe.emojibase)?;
    let style_tarballs =
        styles.iter().map(|s| npm::tarball_path(&options.tarballs, &s.npm)).collect::<Result<Vec<_>, _>>()?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(options.threads.unwrap_or(0))
        .build()
        .map_err(|e| EmojiError::Threads(e.to_string()))?;
    let threads = pool.current_num_threads();

    pool.install(|| {
        let base = emojibase::load(&emojibase_tarball, &recipe.languages, &recipe.universe)?;
        let plan = plan_tags(&base, recipe)?;
        let keys: Vec<EmojiKeys> = base
            .emoji
            .iter()
            .map(|e| EmojiKeys {
                hexcode: &e.hexcode,
                label: &e.label,
                unicode_name: e.unicode_name.as_deref(),
                shortcodes: &e.shortcodes,
            })
            .collect();
        let drawings: Vec<StyleDrawings> = styles
            .par_iter()
            .zip(&style_tarballs)
            .map(|(style, tarball)| load_style(style, tarball, &keys))
            .collect::<Result<_, _>>()?;

        let staging = staging_dir(&options.out);
        remove_dir_if_exists(&staging)?;
        let result = write_dataset(options, recipe, &styles, &base, &plan, &drawings, &staging);
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        let (reports, render_seconds) = result?;
        replace_dir(&staging, &options.out)?;
        Ok(BuildReport {
            out: options.out.clone(),
            size: options.size,
            threads,
            universe: base.emoji.len(),
            classes: plan.classes,
            tags: plan.tags.len(),
            padded_tags: plan.padded,
            styles: reports,
            seconds: started.elapsed().as_secs_f64(),
            render_seconds,
        })
    })
}

/// Renders and writes everything into `staging`; returns the per-style reports and the rendering time.
fn write_dataset(
    options: &BuildOptions,
    recipe: &Recipe,
    styles: &[&Style],
    base: &Emojibase,
    plan: &TagPlan,
    drawings: &[StyleDrawings],
    staging: &Path,
) -> Result<(Vec<StyleReport>, f64), EmojiError> {
    {
        let paths = Paths::new(staging);
        let mut jobs: Vec<(usize, usize, PathBuf)> = Vec::new();
        for (s, (style, drawn)) in styles.iter().zip(drawings).enumerate() {
            let dir = paths.images(recipe.split_of(style)).join(&style.name);
            create_dir(&dir)?;
            for (e, svg) in drawn.svgs.iter().enumerate() {
                if svg.is_some() {
                    jobs.push((s, e, dir.join(format!("{}.png", base.emoji[e].sticker_id))));
                }
            }
        }
        create_dir(&paths.train)?;
        create_dir(&paths.test)?;

        let bar = progress_bar(options.progress, jobs.len() as u64);
        let renderer = Renderer::new(options.size);
        let render_started = Instant::now();
        let results: Vec<Result<(), JobError>> = jobs
            .par_iter()
            .map(|(s, e, path)| {
                let svg = drawings[*s].svgs[*e].as_deref().unwrap_or_default();
                let result = match renderer.render_png(svg) {
                    Ok(png) => std::fs::write(path, png).map_err(|source| JobError::Write(path.clone(), source)),
                    Err(err) => Err(JobError::Render(err.to_string())),
                };
                bar.inc(1);
                result
            })
            .collect();
        let render_seconds = render_started.elapsed().as_secs_f64();
        bar.finish_and_clear();

        let mut written: Vec<Vec<bool>> = drawings.iter().map(|d| vec![false; d.svgs.len()]).collect();
        let mut reports: Vec<StyleReport> = styles
            .iter()
            .zip(drawings)
            .map(|(style, drawn)| StyleReport {
                name: style.name.clone(),
                family: style.family.clone(),
                split: recipe.split_of(style),
                source: style.npm.clone(),
                licence: style.licence.clone(),
                mapped: drawn.svgs.iter().flatten().count(),
                images: 0,
                failures: Vec::new(),
                licence_mismatch: drawn.package_licence.clone().filter(|l| l != &style.licence),
            })
            .collect();
        for ((s, e, _), result) in jobs.iter().zip(results) {
            match result {
                Ok(()) => {
                    written[*s][*e] = true;
                    reports[*s].images += 1;
                }
                Err(JobError::Render(reason)) => {
                    reports[*s].failures.push(Failure { sticker_id: base.emoji[*e].sticker_id.clone(), reason })
                }
                // A full disk is not a drawing's fault: stop there.
                Err(JobError::Write(path, source)) => return Err(EmojiError::Io { path, source }),
            }
        }

        write_tables(&paths, base, plan, styles, recipe, &written)?;
        layout::write_train_label(staging)?;
        write_licences(staging, recipe, styles)?;
        Ok((reports, render_seconds))
    }
}

/// Runs the tag recipe over the universe.
pub fn plan_tags(base: &Emojibase, recipe: &Recipe) -> Result<TagPlan, EmojiError> {
    let inputs: Vec<TagInput> = base
        .emoji
        .iter()
        .map(|e| TagInput { keywords: &e.keywords[0], subgroup: &e.subgroup, group: &e.group })
        .collect();
    tags::plan(&inputs, &recipe.tags).map_err(|e| EmojiError::Tags(e.to_string()))
}

enum JobError {
    Render(String),
    Write(PathBuf, std::io::Error),
}

struct StyleDrawings {
    /// Per emoji of the universe: its SVG document in this style.
    svgs: Vec<Option<String>>,
    package_licence: Option<String>,
}

fn load_style(style: &Style, tarball: &Path, keys: &[EmojiKeys]) -> Result<StyleDrawings, EmojiError> {
    match &style.svg_dir {
        Some(dir) => {
            let prefix = format!("{}/", dir.trim_end_matches('/'));
            let mut entries =
                npm::read_entries(tarball, |p| p == "package.json" || (p.starts_with(&prefix) && p.ends_with(".svg")))?;
            let package_licence = npm::package_licence(&entries);
            entries.remove("package.json");
            let files: BTreeSet<String> = entries
                .keys()
                .filter_map(|p| p.strip_prefix(&prefix)?.strip_suffix(".svg"))
                .filter(|stem| !stem.contains('/'))
                .map(str::to_string)
                .collect();
            let svgs = icons::match_hexcode_files(&files, keys)
                .into_iter()
                .map(|file| {
                    let bytes = entries.get(&format!("{prefix}{}.svg", file?))?;
                    Some(String::from_utf8_lossy(bytes).into_owned())
                })
                .collect();
            Ok(StyleDrawings { svgs, package_licence })
        }
        None => {
            let mut entries =
                npm::read_entries(tarball, |p| matches!(p, "package.json" | "icons.json" | "chars.json"))?;
            let package_licence = npm::package_licence(&entries);
            let icons_json = npm::take_entry(&mut entries, tarball, "icons.json")?;
            let set = IconSet::parse(&icons_json, entries.get("chars.json").map(Vec::as_slice)).map_err(|e| {
                EmojiError::Json { tarball: tarball.to_path_buf(), entry: "icons.json".into(), message: e.to_string() }
            })?;
            let svgs = set
                .match_emoji(keys)
                .into_iter()
                .map(|name| name.and_then(|n| set.icons.get(&n)).map(|icon| icon.svg()))
                .collect();
            Ok(StyleDrawings { svgs, package_licence })
        }
    }
}

struct Paths {
    train: PathBuf,
    test: PathBuf,
    test_labels: PathBuf,
}

impl Paths {
    fn new(root: &Path) -> Paths {
        Paths {
            train: layout::train_dir(root),
            test: layout::test_dir(root),
            test_labels: root.join("test").join("test_labels.csv"),
        }
    }

    fn images(&self, split: Split) -> PathBuf {
        match split {
            Split::Train | Split::Valid => self.train.join("images"),
            Split::Test => self.test.join("images"),
        }
    }
}

fn write_tables(
    paths: &Paths,
    base: &Emojibase,
    plan: &TagPlan,
    styles: &[&Style],
    recipe: &Recipe,
    written: &[Vec<bool>],
) -> Result<(), EmojiError> {
    let tag_list = |e: usize| plan.emoji_tags[e].iter().map(u16::to_string).collect::<Vec<_>>().join(",");

    let mut train = String::from("package_id,sticker_id,tags\n");
    let mut order = String::from("index,package_id,sticker_id\n");
    let mut labels = String::from("index,tags\n");
    let mut index = 0usize;
    for (s, style) in styles.iter().enumerate() {
        for (e, emoji) in base.emoji.iter().enumerate().filter(|(e, _)| written[s][*e]) {
            if recipe.split_of(style) == Split::Test {
                order.push_str(&format!("{index},{},{}\n", style.name, emoji.sticker_id));
                labels.push_str(&format!("{index},\"{}\"\n", tag_list(e)));
                index += 1;
            } else {
                train.push_str(&format!("{},{},\"{}\"\n", style.name, emoji.sticker_id, tag_list(e)));
            }
        }
    }
    write_file(&paths.train.join("train_with_valid_tags.csv"), &train)?;
    write_file(&paths.test.join("test_order.csv"), &order)?;
    write_file(&paths.test_labels, &labels)?;

    let mut packages = String::from("package_id\tstyle\tfamily\tsource\tlicence\tsplit\n");
    for style in styles.iter().filter(|s| recipe.split_of(s) != Split::Test) {
        packages.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\n",
            style.name,
            style.name,
            style.family,
            style.npm,
            field(&style.licence),
            recipe.split_of(style).as_str()
        ));
    }
    write_file(&paths.train.join("packages.tsv"), &packages)?;

    // Fixed first keywords: a keyword tag's own English name; a subgroup's or group's localized name.
    let fixed: Vec<Vec<Option<String>>> = plan
        .tags
        .iter()
        .enumerate()
        .map(|(id, tag)| {
            (0..base.languages.len())
                .map(|l| match tag.kind {
                    _ if id >= NUM_TAGS - plan.padded => None, // padding: no emoji, no keywords
                    TagKind::Keyword => (l == 0).then(|| tag.name.clone()),
                    TagKind::Subgroup | TagKind::Group => base.names[l].get(&tag.name).cloned(),
                })
                .collect()
        })
        .collect();
    let per_emoji_keywords: Vec<Vec<Vec<String>>> = base.emoji.iter().map(|e| e.keywords.clone()).collect();
    let keywords =
        tags::tag_keywords(&plan.emoji_tags, &per_emoji_keywords, base.languages.len(), &fixed, KEYWORDS_PER_LANGUAGE);
    let mut tsv = String::from("tag\tkeywords\tlanguages\tname\n");
    let languages = base.languages.join("|");
    for (id, (tag, words)) in plan.tags.iter().zip(&keywords).enumerate() {
        let words = words
            .iter()
            .map(|list| list.iter().map(|w| keyword(w)).filter(|w| !w.is_empty()).collect::<Vec<_>>().join(","))
            .collect::<Vec<_>>()
            .join("|");
        tsv.push_str(&format!("{id}\t{words}\t{languages}\t{}\n", field(&tag.name)));
    }
    write_file(&paths.train.join("tag.tsv"), &tsv)
}

fn write_licences(root: &Path, recipe: &Recipe, styles: &[&Style]) -> Result<(), EmojiError> {
    let mut text = String::from(
        "# Licences of this dataset\n\n\
         Built by `rush dataset build` from the npm packages below. Each package folder holds one art style; the images\n\
         are renderings of that package's drawings and keep its licence (CC-BY: credit the authors; CC-BY-SA: share\n\
         derived images under the same licence). Tags and keywords come from the emoji data package.\n\n\
         | package_id | family | split | source (npm) | licence |\n|---|---|---|---|---|\n",
    );
    for style in styles {
        text.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            style.name,
            style.family,
            recipe.split_of(style).as_str(),
            style.npm,
            style.licence
        ));
    }
    text.push_str(&format!("\nTags and keywords (`tag.tsv`, the csv tags): `{}` (MIT).\n", recipe.emojibase));
    write_file(&root.join("LICENSES.md"), &text)
}

/// A TSV field: tabs and line breaks become spaces.
fn field(text: &str) -> String {
    text.replace(['\t', '\n', '\r'], " ")
}

/// A keyword inside the `keywords` column, whose separators are `,` (words) and `|` (languages).
fn keyword(text: &str) -> String {
    text.replace(['\t', '\n', '\r', ',', '|'], " ").trim().to_string()
}

fn progress_bar(wanted: bool, len: u64) -> indicatif::ProgressBar {
    if !wanted || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let style = indicatif::ProgressStyle::with_template("rendering [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    indicatif::ProgressBar::new(len).with_style(style)
}

/// `out` must not exist, or (with `force`) be an earlier dataset or empty.
fn check_output(out: &Path, force: bool) -> Result<(), EmojiError> {
    if !out.exists() {
        return Ok(());
    }
    let empty = std::fs::read_dir(out).map(|mut d| d.next().is_none()).unwrap_or(false);
    let dataset = out.join("train").join("train_data").is_dir();
    if !force {
        return Err(EmojiError::OutputExists { path: out.to_path_buf() });
    }
    if !(empty || dataset) {
        return Err(EmojiError::NotADataset { path: out.to_path_buf() });
    }
    Ok(())
}

fn staging_dir(out: &Path) -> PathBuf {
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "dataset".into());
    out.with_file_name(format!(".{name}.partial"))
}

fn replace_dir(staging: &Path, out: &Path) -> Result<(), EmojiError> {
    remove_dir_if_exists(out)?;
    std::fs::rename(staging, out).map_err(|source| EmojiError::Io { path: out.to_path_buf(), source })
}

fn remove_dir_if_exists(dir: &Path) -> Result<(), EmojiError> {
    match std::fs::remove_dir_all(dir) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            Err(EmojiError::Io { path: dir.to_path_buf(), source: err })
        }
        _ => Ok(()),
    }
}

fn create_dir(dir: &Path) -> Result<(), EmojiError> {
    std::fs::create_dir_all(dir).map_err(|source| EmojiError::Io { path: dir.to_path_buf(), source })
}

fn write_file(path: &Path, text: &str) -> Result<(), EmojiError> {
    let io = |source| EmojiError::Io { path: path.to_path_buf(), source };
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    file.write_all(text.as_bytes()).map_err(io)?;
    file.flush().map_err(io)
}
