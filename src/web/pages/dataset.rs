//! A dataset's page (`/datasets/{name}`): its packages (styles) and classes with their image counts, a sample sticker
//! of each class, and the tags' names in a chosen language of `tag.tsv`; one class (`/datasets/{name}/tags/{tag}`)
//! with its keywords in every language and samples from each package; and the stickers' images
//! (`/datasets/{name}/images/{package}/{sticker}`), served only from the dataset's training images
//! (`Daemon::dataset_image`).

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use serde::Deserialize;

use super::{AppState, Chrome, PageError, PageResult, html};
use crate::core::tags::{NAME_LANGUAGE, TagText};

/// `?lang=`: the language tags are named in.
#[derive(Debug, Default, Deserialize)]
pub struct LanguageQuery {
    pub lang: Option<String>,
}

/// A path segment, percent-encoded (unreserved characters kept).
pub(super) fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A query string of `pairs` (form-encoded; empty values left out).
pub(super) fn query(pairs: &[(&str, &str)]) -> String {
    let kept: Vec<(&str, &str)> = pairs.iter().copied().filter(|(_, v)| !v.is_empty()).collect();
    serde_urlencoded::to_string(&kept).unwrap_or_default()
}

/// The URL of a training sticker's image.
pub(super) fn image_url(dataset: &str, package: &str, sticker: &str) -> String {
    format!("/datasets/{}/images/{}/{}", segment(dataset), segment(package), segment(sticker))
}

/// The language to show: the asked one when `tag.tsv` has it, else English (or its first language).
pub(super) fn language(asked: Option<&str>, languages: &[String]) -> String {
    let fallback = if languages.iter().any(|l| l == NAME_LANGUAGE) || languages.is_empty() {
        NAME_LANGUAGE.to_string()
    } else {
        languages[0].clone()
    };
    asked.filter(|a| languages.iter().any(|l| l == a)).map_or(fallback, str::to_string)
}

/// A language switch: (language, its URL, shown now).
pub(super) type LanguageLink = (String, String, bool);

pub(super) fn language_links(languages: &[String], chosen: &str, url: impl Fn(&str) -> String) -> Vec<LanguageLink> {
    languages.iter().map(|l| (l.clone(), url(l), l == chosen)).collect()
}

/// Every language's keywords of a tag, as "lang: words" lines.
fn keyword_lines(tag: &TagText) -> Vec<(String, String)> {
    tag.keywords.iter().filter(|k| !k.words.is_empty()).map(|k| (k.language.clone(), k.words.join(", "))).collect()
}

struct PackageLine {
    package: String,
    style: String,
    family: String,
    split: String,
    images: usize,
    classes: usize,
}

struct ClassLine {
    id: u16,
    label: String,
    /// Every language's keywords, for the title.
    keywords: String,
    images: usize,
    packages: usize,
    url: String,
    thumbnail: Option<String>,
}

#[derive(Template)]
#[template(path = "dataset.html")]
struct DatasetTemplate {
    chrome: Chrome,
    name: String,
    images: usize,
    unused_tags: usize,
    languages: Vec<LanguageLink>,
    packages: Vec<PackageLine>,
    classes: Vec<ClassLine>,
    board_url: String,
    sessions_url: String,
}

pub(super) async fn dataset_page(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<LanguageQuery>,
) -> PageResult {
    let overview = state.daemon.dataset_overview(&name).await?;
    let lang = language(q.lang.as_deref(), &overview.languages);
    let base = format!("/datasets/{}", segment(&name));
    let classes = overview
        .classes
        .iter()
        .map(|c| ClassLine {
            id: c.tag.id,
            label: c.tag.label(&lang),
            keywords: keyword_lines(&c.tag).iter().map(|(l, w)| format!("{l}: {w}")).collect::<Vec<_>>().join("\n"),
            images: c.images,
            packages: c.packages,
            url: format!("{base}/tags/{}?{}", c.tag.id, query(&[("lang", &lang)])),
            thumbnail: c.sample.as_ref().map(|s| image_url(&name, &s.package, &s.sticker)),
        })
        .collect();
    let packages = overview
        .packages
        .iter()
        .map(|p| PackageLine {
            package: p.package.clone(),
            style: p.style.clone(),
            family: p.family.clone(),
            split: p.split.clone().unwrap_or_default(),
            images: p.images,
            classes: p.classes,
        })
        .collect();
    html(&DatasetTemplate {
        chrome: Chrome::new(&state, "datasets"),
        languages: language_links(&overview.languages, &lang, |l| format!("{base}?{}", query(&[("lang", l)]))),
        images: overview.images,
        unused_tags: overview.unused_tags,
        packages,
        classes,
        board_url: format!("{base}/board"),
        sessions_url: format!("/sessions?{}", query(&[("dataset", &name)])),
        name,
    })
}

struct SampleGroup {
    package: String,
    style: String,
    images: usize,
    /// (image URL, alt text).
    stickers: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "dataset_tag.html")]
struct TagTemplate {
    chrome: Chrome,
    name: String,
    dataset_url: String,
    id: u16,
    label: String,
    images: usize,
    keywords: Vec<(String, String)>,
    languages: Vec<LanguageLink>,
    groups: Vec<SampleGroup>,
}

pub(super) async fn tag_page(
    State(state): State<AppState>,
    Path((name, tag)): Path<(String, String)>,
    Query(q): Query<LanguageQuery>,
) -> PageResult {
    let id: u16 = tag.parse().map_err(|_| PageError::bad(format!("{tag:?} is not a tag id")))?;
    let samples = state.daemon.dataset_tag(&name, id, crate::web::analysis::SAMPLES_PER_PACKAGE).await?;
    let lang = language(q.lang.as_deref(), &samples.languages);
    let base = format!("/datasets/{}", segment(&name));
    let groups = samples
        .packages
        .iter()
        .map(|p| SampleGroup {
            package: p.package.clone(),
            style: p.style.clone(),
            images: p.images,
            stickers: p
                .stickers
                .iter()
                .map(|s| (image_url(&name, &p.package, s), format!("{}/{s}", p.package)))
                .collect(),
        })
        .collect();
    html(&TagTemplate {
        chrome: Chrome::new(&state, "datasets"),
        dataset_url: format!("{base}?{}", query(&[("lang", &lang)])),
        languages: language_links(&samples.languages, &lang, |l| format!("{base}/tags/{id}?{}", query(&[("lang", l)]))),
        label: samples.tag.label(&lang),
        keywords: keyword_lines(&samples.tag),
        images: samples.images,
        groups,
        id,
        name,
    })
}

/// A training sticker's PNG, as the dataset holds it (`nosniff`: never anything but an image).
pub(super) async fn image(
    State(state): State<AppState>,
    Path((name, package, sticker)): Path<(String, String, String)>,
) -> PageResult {
    let path = state.daemon.dataset_image(&name, &package, &sticker).await?;
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|_| PageError::not_found(format!("no sticker {package}/{sticker} in {name}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/png"),
            (header::CACHE_CONTROL, "max-age=3600"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        bytes,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::super::fixture::{Fixture, HOSTILE_TAG};
    use super::*;

    #[test]
    fn urls_encode_what_they_carry() {
        assert_eq!(segment("a b/<c>"), "a%20b%2F%3Cc%3E");
        assert_eq!(image_url("emoji", "p 1", "s&2"), "/datasets/emoji/images/p%201/s%262");
        assert_eq!(query(&[("lang", "ko"), ("x", ""), ("q", "a&b")]), "lang=ko&q=a%26b");
        let langs = vec!["ko".to_string(), "en".to_string()];
        assert_eq!((language(Some("ko"), &langs), language(Some("zz"), &langs)), ("ko".into(), "en".into()));
        assert_eq!(language(None, &["ja".to_string()]), "ja");
    }

    #[tokio::test]
    async fn the_dataset_page_counts_classes_and_packages_and_names_tags_in_each_language() {
        let f = Fixture::new().await;
        let d = f.with_dataset().await;
        let page = f.get("/datasets/emoji").await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        assert!(page.body.contains(&format!("{} training images", d.images)), "{}", page.body);
        // every package with its count, every class with its count and a thumbnail
        for (package, count) in &d.per_package {
            let row = page.body.split(&format!("<td class=\"mono\">{package}</td>")).nth(1).unwrap().split("</tr>");
            assert!(row.clone().next().unwrap().contains(&format!("<td class=\"num\">{count}</td>")), "{package}");
        }
        for (class, count) in &d.per_class {
            let row = page.body.split(&format!("<tr data-tag=\"{class}\">")).nth(1).unwrap().split("</tr>").next();
            let row = row.unwrap();
            assert!(row.contains(&format!("<td class=\"num\">{count}</td>")), "{row}");
            assert!(row.contains("<img src=\"/datasets/emoji/images/"), "{row}");
        }
        // the hostile tag name, escaped; Korean names on asking
        assert!(!page.body.contains(HOSTILE_TAG) && page.body.contains("&#60;script&#62;"), "{}", page.body);
        let ko = f.get("/datasets/emoji?lang=ko").await;
        assert!(ko.body.contains(&format!("한{}", d.per_class[0].0)), "{}", ko.body);
        assert!(ko.body.contains("class=\"on\" href=\"/datasets/emoji?lang=ko\""), "{}", ko.body);
        // the list links it
        let list = f.get("/datasets").await;
        assert!(list.body.contains("href=\"/datasets/emoji\">classes &amp; images</a>"), "{}", list.body);

        // one class: keywords in every language, samples from each package
        let (class, count) = d.per_class[0];
        let tag = f.get(&format!("/datasets/emoji/tags/{class}")).await;
        assert_eq!(tag.status, StatusCode::OK, "{}", tag.body);
        for word in [format!("en{class}"), format!("한{class}"), format!("日{class}")] {
            assert!(tag.body.contains(&word), "{word}: {}", tag.body);
        }
        let shown = tag.body.matches("<img src=\"/datasets/emoji/images/").count();
        assert_eq!(shown, count.min(d.per_package.len() * SAMPLES), "{}", tag.body);
        assert_eq!(f.get("/datasets/emoji/tags/x").await.status, StatusCode::BAD_REQUEST);
        assert_eq!(f.get("/datasets/emoji/tags/349").await.status, StatusCode::OK, "in tag.tsv, no sticker");
        assert_eq!(f.get("/datasets/nope").await.status, StatusCode::NOT_FOUND);
        let api = f.get("/api/datasets/emoji/overview").await;
        assert_eq!(api.status, StatusCode::OK);
        let json: serde_json::Value = serde_json::from_str(&api.body).unwrap();
        assert_eq!(json["images"], d.images);
        let api = f.get(&format!("/api/datasets/emoji/tags/{class}")).await;
        let json: serde_json::Value = serde_json::from_str(&api.body).unwrap();
        assert_eq!(json["images"], count);
    }

    const SAMPLES: usize = crate::web::analysis::SAMPLES_PER_PACKAGE;

    #[tokio::test]
    async fn images_come_only_from_the_datasets_training_stickers() {
        let f = Fixture::new().await;
        let d = f.with_dataset().await;
        let (package, sticker) = &d.first;
        let png = f.get(&format!("/datasets/emoji/images/{package}/{sticker}")).await;
        assert_eq!(png.status, StatusCode::OK);
        assert_eq!((png.header("content-type"), png.header("x-content-type-options")), ("image/png", "nosniff"));
        assert!(png.body.as_bytes().starts_with(b"\x89PNG") || png.body.starts_with("\u{FFFD}PNG"));
        // a secret beside the images, labels, other paths: refused or not found, never served
        let home = f.state.home().root().to_path_buf();
        std::fs::write(home.join("datasets/emoji/train/secret.png"), b"secret").unwrap();
        std::os::unix::fs::symlink(
            home.join("datasets/emoji/train/secret.png"),
            d.images_dir.join(package).join("link.png"),
        )
        .unwrap();
        for (uri, status) in [
            (format!("/datasets/emoji/images/{package}/link"), StatusCode::BAD_REQUEST),
            (format!("/datasets/emoji/images/{package}/..%2F..%2Fsecret"), StatusCode::BAD_REQUEST),
            ("/datasets/emoji/images/..%2F..%2Ftrain/secret".to_string(), StatusCode::BAD_REQUEST),
            ("/datasets/emoji/images/..%2Ftrain_data/train_with_valid_tags".to_string(), StatusCode::BAD_REQUEST),
            (format!("/datasets/emoji/images/{package}/.hidden"), StatusCode::BAD_REQUEST),
            (format!("/datasets/emoji/images/{package}/nosuch"), StatusCode::NOT_FOUND),
            (format!("/datasets/nope/images/{package}/{sticker}"), StatusCode::NOT_FOUND),
            (format!("/datasets/..%2Fhome/images/{package}/{sticker}"), StatusCode::NOT_FOUND),
        ] {
            let a = f.get(&uri).await;
            assert_eq!(a.status, status, "{uri}: {}", a.body);
            assert_ne!(a.body, "secret", "{uri}");
            assert_ne!(a.header("content-type"), "image/png", "{uri}");
        }
    }
}
